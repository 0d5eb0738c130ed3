// fauxqs 1.9.2 (SQS) bound to 127.0.0.1 only: its CLI and startFauxqs() bind 0.0.0.0.
import { buildApp } from 'fauxqs';

const app = buildApp({ logger: false });
await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' });
process.stdout.write(`fauxqs listening on 127.0.0.1:${process.env.PORT}\n`);
