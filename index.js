'use strict';

const { RedisStreamSessionManager, LINK } = require('./lib/streams.js');
const { RedisInfoSessionManager } = require('./lib/info.js');
const { Link } = require('./lib/link.js');
const { normalizeOptions, checkUrl } = require('./lib/options.js');

/**
 * Builds both managers on one shared command connection.
 * @param {string} redisUrl
 * @param {import('./index').RedisSessionManagerOptions} [options]
 */
function createSessionManagers(redisUrl, options) {
	checkUrl(redisUrl);
	const link = new Link(redisUrl, normalizeOptions(options));
	const shared = { [LINK]: link };
	return {
		streams: new RedisStreamSessionManager(redisUrl, shared),
		info: new RedisInfoSessionManager(redisUrl, shared),
	};
}

module.exports = { RedisStreamSessionManager, RedisInfoSessionManager, createSessionManagers };
