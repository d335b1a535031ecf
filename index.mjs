import cjs from './index.js';

export const { RedisStreamSessionManager, RedisInfoSessionManager, RedisSubscriptionManager, createSessionManagers, CHANNELS, ERROR_CODES } = cjs;
