'use strict';
// The options object: upstream's defaults and validation, with TypeErrors naming the
// option and what it got. Why JavaScript: the options are JavaScript values that may be
// hostile (getters, Proxies): each is read once here, copied into plain data, and only
// that copy crosses to Rust (src/config/).

const { argumentError, argumentTypeError, describe } = require('./errors.js');

const DEFAULTS = Object.freeze({
	keyPrefix: '',
	sessionTtlSeconds: 10,
	commandTimeout: 5000,
	connectTimeout: 5000,
	upstreamCompatible: false,
	onError: undefined,
	tls: undefined,
	sentinel: undefined,
	cluster: undefined,
});

/**
 * The object option `name`, checked: a plain object holding only `known` keys (`shape`
 * describes it in the error, `hint` follows an unknown key's). A copy: each property is
 * read once (getters included).
 * @param {string} name @param {unknown} value @param {string[]} known @param {string} shape
 * @param {string} [hint]
 * @returns {Record<string, unknown>}
 */
function plainObject(name, value, known, shape, hint = '') {
	if (typeof value !== 'object' || value === null || Array.isArray(value)) {
		throw argumentTypeError(`Option "${name}" must be ${shape}, got ${describe(value)}`);
	}
	const copy = { ...value };
	for (const key of Object.keys(copy)) {
		if (!known.includes(key)) {
			throw argumentTypeError(`Unknown option "${name}.${key}" (known: ${known.join(', ')})${hint}`);
		}
	}
	return copy;
}

/**
 * A copy of the array option `name` (its iterator read once), or undefined when it is not
 * a non-empty array.
 * @param {unknown} value
 */
function arrayCopy(value) {
	if (!Array.isArray(value)) return undefined;
	const copy = Array.from(value);
	return copy.length > 0 ? copy : undefined;
}

const TLS_KEYS = ['ca', 'cert', 'key'];

/** @param {unknown} tls */
function normalizeTls(tls) {
	const given = plainObject('tls', tls, TLS_KEYS, 'an object { ca?, cert?, key? }');
	/** @type {{ ca?: string, cert?: string, key?: string }} */
	const result = {};
	for (const key of Object.keys(given)) {
		const value = given[key];
		if (value === undefined) continue;
		if (typeof value === 'string') result[/** @type {'ca'} */ (key)] = value;
		else if (Buffer.isBuffer(value)) result[/** @type {'ca'} */ (key)] = value.toString('utf8');
		else throw argumentTypeError(`Option "tls.${key}" must be a PEM string or Buffer, got ${describe(value)}`);
	}
	return result;
}

/** The forms a node list (`sentinel.nodes`, `cluster.nodes`) takes. */
const NODE_FORMS = '"host:port" strings, redis:// or rediss:// URLs or { host, port } objects';
const HOST_PORT = /^(\[[^\]\s]+\]|[^:\s/@[\]]+):\d{1,5}$/;
const NODE_URL = /^(redis|rediss|valkey|valkeys):\/\//i;
/** A host of `{ host, port }`: a name, an IPv4 address or an IPv6 one (bracketed or not). */
const HOST = /^(\[[^\]\s]+\]|[^\s/@[\]]+)$/;
const NODE_KEYS = ['host', 'port'];
const NODE_HINT = ": a node's own credentials or TLS go in a redis:// or rediss:// URL";

/**
 * A node list entry for a message, with whatever stands before an `@` (a URL's user and
 * password) masked: errors never show a password.
 * @param {unknown} value
 */
function describeNode(value) {
	return describe(typeof value === 'string' ? value.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/?#]*@/i, '$1***@') : value);
}

/**
 * The node list option `name`, one form everywhere: each entry a "host:port" string, a
 * redis:// or rediss:// URL (the native side parses it) or a `{ host, port }` object,
 * which becomes "host:port". The native side takes strings.
 * @param {string} name @param {unknown} value
 * @returns {string[]}
 */
function nodeList(name, value) {
	const nodes = arrayCopy(value);
	if (!nodes) {
		throw argumentTypeError(`Option "${name}" must be a non-empty array of ${NODE_FORMS}, got ${describeNode(value)}`);
	}
	return nodes.map((node, index) => {
		if (typeof node === 'string' && (HOST_PORT.test(node) || NODE_URL.test(node))) return node;
		if (typeof node !== 'object' || node === null || Array.isArray(node)) {
			throw argumentTypeError(`Option "${name}" must hold ${NODE_FORMS}, got ${describeNode(node)}`);
		}
		const entry = `${name}[${index}]`;
		const { host, port } = plainObject(entry, node, NODE_KEYS, 'an object { host, port }', NODE_HINT);
		if (typeof host !== 'string' || !HOST.test(host)) {
			throw argumentTypeError(`Option "${entry}.host" must be a host name or IP address, got ${describeNode(host)}`);
		}
		integer(`${entry}.port`, port, 1, 65535);
		return `${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
	});
}

const SENTINEL_KEYS = ['nodes', 'username', 'password', 'tls'];

/**
 * `{ nodes, username?, password?, tls? }`: the sentinels to ask for the master; `tls:
 * true` reaches them over TLS (verified like the data nodes, with `tls`). A node's URL
 * brings its own credentials and scheme (`rediss://`: TLS) for that sentinel alone.
 * @param {unknown} sentinel
 */
function normalizeSentinel(sentinel) {
	const given = plainObject('sentinel', sentinel, SENTINEL_KEYS, 'an object { nodes, username?, password?, tls? }');
	const { username, password, tls } = given;
	const nodes = nodeList('sentinel.nodes', given.nodes);
	for (const [name, value] of [['username', username], ['password', password]]) {
		if (value !== undefined && (typeof value !== 'string' || !isWellFormed(value))) {
			throw argumentTypeError(`Option "sentinel.${name}" must be a well-formed string, got ${describe(value)}`);
		}
	}
	if (tls !== undefined && typeof tls !== 'boolean') {
		throw argumentTypeError(`Option "sentinel.tls" must be a boolean, got ${describe(tls)}`);
	}
	return { nodes, username, password, tls: tls === true };
}

const CLUSTER_KEYS = ['nodes'];

/**
 * `true`, or `{ nodes }`: more seed nodes besides the URL's.
 * @param {unknown} cluster
 * @returns {{ nodes: string[] } | undefined}
 */
function normalizeCluster(cluster) {
	if (cluster === false) return undefined;
	if (cluster === true) return { nodes: [] };
	const given = plainObject('cluster', cluster, CLUSTER_KEYS, 'true or an object { nodes }');
	return { nodes: nodeList('cluster.nodes', given.nodes) };
}

/** @param {string} name @param {unknown} value @param {number} min @param {number} max */
function integer(name, value, min, max) {
	if (!Number.isInteger(value) || value < min || value > max) {
		throw argumentTypeError(
			`Option "${name}" must be an integer from ${min} to ${max}, got ${describe(value)}`,
		);
	}
	return value;
}

/**
 * Validates the optional options object and fills in defaults. Throws only TypeErrors,
 * whatever the object's getters or traps throw.
 * @param {unknown} options
 */
function normalizeOptions(options) {
	try {
		return readOptions(options);
	} catch (error) {
		throw argumentError(error);
	}
}

/** @param {unknown} options */
function readOptions(options) {
	if (options === undefined || options === null) return { ...DEFAULTS };
	if (typeof options !== 'object' || Array.isArray(options)) {
		throw argumentTypeError(`options must be an object, got ${describe(options)}`);
	}
	// A copy: each option is read once, so what was checked is what is used.
	const given = /** @type {Record<string, unknown>} */ ({ ...options });
	for (const key of Object.keys(given)) {
		if (!(key in DEFAULTS)) {
			throw argumentTypeError(
				`Unknown option "${key}" (known: ${Object.keys(DEFAULTS).join(', ')})`,
			);
		}
	}
	const result = { ...DEFAULTS };
	if (given.keyPrefix !== undefined) {
		// It starts every key and channel: a lone surrogate would make two prefixes one.
		if (typeof given.keyPrefix !== 'string' || !isWellFormed(given.keyPrefix)) {
			throw argumentTypeError(`Option "keyPrefix" must be a well-formed string, got ${describe(given.keyPrefix)}`);
		}
		result.keyPrefix = given.keyPrefix;
	}
	if (given.sessionTtlSeconds !== undefined) {
		result.sessionTtlSeconds = integer('sessionTtlSeconds', given.sessionTtlSeconds, 3, 86400);
	}
	if (given.commandTimeout !== undefined) {
		result.commandTimeout = integer('commandTimeout', given.commandTimeout, 1, 600000);
	}
	if (given.connectTimeout !== undefined) {
		result.connectTimeout = integer('connectTimeout', given.connectTimeout, 1, 600000);
	}
	if (given.upstreamCompatible !== undefined) {
		if (typeof given.upstreamCompatible !== 'boolean') {
			throw argumentTypeError(
				`Option "upstreamCompatible" must be a boolean, got ${describe(given.upstreamCompatible)}`,
			);
		}
		result.upstreamCompatible = given.upstreamCompatible;
	}
	if (given.onError !== undefined) {
		if (typeof given.onError !== 'function') {
			throw argumentTypeError(`Option "onError" must be a function, got ${describe(given.onError)}`);
		}
		result.onError = /** @type {(error: Error) => void} */ (given.onError);
	}
	if (given.tls !== undefined) {
		result.tls = normalizeTls(given.tls);
	}
	if (given.sentinel !== undefined) {
		result.sentinel = normalizeSentinel(given.sentinel);
	}
	if (given.cluster !== undefined) {
		result.cluster = normalizeCluster(given.cluster);
	}
	if (result.cluster && result.sentinel) {
		throw argumentTypeError('Options "cluster" and "sentinel" exclude each other: a Redis Cluster does not run behind Sentinel');
	}
	return result;
}

/** @param {ReturnType<typeof normalizeOptions>} options */
function nativeOptions(options) {
	return {
		keyPrefix: options.keyPrefix,
		sessionTtlSeconds: options.sessionTtlSeconds,
		commandTimeoutMs: options.commandTimeout,
		connectTimeoutMs: options.connectTimeout,
		upstreamCompatible: options.upstreamCompatible,
		tls: options.tls,
		sentinel: options.sentinel,
		cluster: options.cluster,
	};
}

/** A string with a lone surrogate (the fallback where String.prototype.isWellFormed is missing). */
const LONE_SURROGATE = /\p{Surrogate}/u;

/**
 * Whether `text` is well-formed UTF-16: only such strings round-trip through UTF-8 (in
 * Redis a lone surrogate becomes U+FFFD, so ids differing only in one would collide).
 * @param {string} text
 */
const isWellFormed =
	typeof String.prototype.isWellFormed === 'function'
		? (/** @type {string} */ text) => text.isWellFormed()
		: (/** @type {string} */ text) => !LONE_SURROGATE.test(text);

/**
 * An id (or anything else that becomes part of a key or channel): a non-empty,
 * well-formed string.
 * @param {string} what
 * @param {unknown} value
 */
function checkId(what, value) {
	if (typeof value !== 'string' || value.length === 0) {
		throw argumentTypeError(`${what} must be a non-empty string, got ${describe(value)}`);
	}
	if (!isWellFormed(value)) {
		throw argumentTypeError(`${what} must be well-formed UTF-16 (it has a lone surrogate), got ${describe(value)}`);
	}
}

/** @param {unknown} url */
function checkUrl(url) {
	if (typeof url !== 'string') {
		throw argumentTypeError(`Redis URL must be a string, got ${describe(url)}`);
	}
}

module.exports = { normalizeOptions, nativeOptions, checkId, checkUrl, isWellFormed };
