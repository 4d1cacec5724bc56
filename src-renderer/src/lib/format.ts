// Numbers as the screens show them.

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** 75 s -> "1 min 15 s"; 4000 s -> "1 h 6 min". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Loss and learning-rate values: 4 significant digits, exponent form when tiny. */
export function formatValue(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  if (value !== 0 && Math.abs(value) < 1e-3) return value.toExponential(2);
  return Number(value.toPrecision(4)).toString();
}

export function formatGiB(gib: number | null | undefined): string {
  return gib === null || gib === undefined || !Number.isFinite(gib) ? '—' : `${gib.toFixed(2)} GiB`;
}

/** The current time as an ISO 8601 string. */
export function nowIso(): string {
  return new Date().toISOString();
}

/** An ISO time as the user's locale writes it. */
export function formatTime(iso: string): string {
  return new Date(iso).toLocaleString();
}
