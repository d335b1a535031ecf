// `@tmcp-rs/session-manager-redis/otel` for `import` (see otel.js).
import cjs from './otel.js';

export const { instrument } = cjs;
