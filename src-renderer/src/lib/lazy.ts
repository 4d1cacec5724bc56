// An attachment that calls `onVisible` once, when the element first scrolls into view (or near
// it): thumbnails of a thousand-image folder load as the user gets to them.
import type { Attachment } from 'svelte/attachments';

export function whenVisible(onVisible: () => void): Attachment<HTMLElement> {
  return (element) => {
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) {
          observer.disconnect();
          onVisible();
        }
      },
      { rootMargin: '200px' },
    );
    observer.observe(element);
    return () => observer.disconnect();
  };
}
