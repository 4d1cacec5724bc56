// Starts the TypeScript worker entry through tsx in a plain Node child process (the headless
// server's workers), the way bin/lora-studio.mjs starts the CLI: no build step needed.
import { register } from 'tsx/esm/api';

register();
await import('./entry.ts');
