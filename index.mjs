import cjs from './index.js';

export const { RedisStreamSessionManager, RedisInfoSessionManager, createSessionManagers } = cjs;
