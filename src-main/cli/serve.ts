// `lora-studio serve`: the headless studio (see src-main/server/server.ts).
import { parseArgs } from 'node:util';
import { startHeadlessStudio } from '../server/server';
import { CliUsageError, type CliCommand } from './command';

export const serveCommand: CliCommand = {
  summary: 'Serve the studio to a browser (headless: no display needed)',
  usage: `lora-studio serve [--host 127.0.0.1] [--port 0] [--root <folder>]...

  --host <address>   interface to listen on (default 127.0.0.1: this machine only;
                     reach it from elsewhere with an SSH tunnel: ssh -L 7860:127.0.0.1:7860 gpu-box)
  --port <number>    port (default 0: any free port)
  --root <folder>    a folder the studio may read and write; repeat for more
                     (default: the current folder)
  --renderer <dir>   built renderer to serve (default: out/renderer of this checkout)`,

  async run(args) {
    const { values } = parseCliArgs(args);
    const port = Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new CliUsageError(`--port must be a whole number from 0 to 65535, got ${values.port}.`);
    }
    const studio = await startHeadlessStudio({
      host: values.host,
      port,
      roots: values.root && values.root.length > 0 ? values.root : [process.cwd()],
      rendererDir: values.renderer,
    });
    // Tests and scripts read the URL from this exact line.
    console.log(`LoRA Studio is serving at ${studio.url}`);
    console.log(`Folders open to the studio: ${studio.guard.list().join(', ')}`);
    console.log('Anyone with this URL can use the studio. Press Ctrl+C to stop.');

    await new Promise<void>((done) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        void studio.close().then(done);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    return 0;
  },
};

function parseCliArgs(args: string[]) {
  try {
    return parseArgs({
      args,
      options: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string', default: '0' },
        root: { type: 'string', multiple: true },
        renderer: { type: 'string' },
      },
      allowPositionals: false,
      strict: true,
    });
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }
}
