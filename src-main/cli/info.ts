// `lora-studio info`: what the studio's `app.info` reports, from the command line.
import { ApiEventBus } from '../api/events';
import { createApiHandlers } from '../api/handlers';
import { PathGuard } from '../api/path-guard';
import { packageVersion } from '../server/server';
import { CliUsageError, type CliCommand } from './command';

export const infoCommand: CliCommand = {
  summary: 'Show the version and the execution providers onnxruntime offers here',
  usage: 'lora-studio info [--json]',

  async run(args) {
    const json = args.includes('--json');
    const unknown = args.filter((a) => a !== '--json');
    if (unknown.length > 0) throw new CliUsageError(`Unknown argument ${unknown[0]}.`);
    const api = createApiHandlers({
      kind: 'cli',
      version: packageVersion(),
      guard: new PathGuard(),
      events: new ApiEventBus(),
    });
    const info = await api['app.info']();
    if (json) {
      console.log(JSON.stringify(info, null, 2));
    } else {
      console.log(`${info.name} ${info.version} (Node ${info.nodeVersion}, ${info.platform}-${info.arch})`);
      console.log(`Execution providers: ${info.providers.join(', ')}`);
    }
    return 0;
  },
};
