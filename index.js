'use strict';

const { RedisStreamSessionManager } = require('./lib/streams.js');
const { RedisInfoSessionManager } = require('./lib/info.js');
const { RedisSubscriptionManager } = require('./lib/subscriptions.js');
const { Link } = require('./lib/link.js');
const { normalizeOptions, checkUrl } = require('./lib/options.js');
const { CODES } = require('./lib/errors.js');
const { CHANNELS } = require('./lib/observe.js');

/**
 * Builds the three managers on one shared command connection (the stream and
 * subscription managers add a pub/sub connection each).
 * @param {string} redisUrl
 * @param {import('./index').RedisSessionManagerOptions} [options]
 */
function createSessionManagers(redisUrl, options) {
	checkUrl(redisUrl);
	const shared = new Link(redisUrl, normalizeOptions(options)).sharing();
	return {
		streams: new RedisStreamSessionManager(redisUrl, shared),
		info: new RedisInfoSessionManager(redisUrl, shared),
		subscriptions: new RedisSubscriptionManager(redisUrl, shared),
	};
}

module.exports = {
	RedisStreamSessionManager,
	RedisInfoSessionManager,
	RedisSubscriptionManager,
	createSessionManagers,
	CHANNELS,
	ERROR_CODES: CODES,
};
