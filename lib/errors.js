'use strict';
// Turning values the app passed or threw into Errors and messages. The values may be
// hostile (a Proxy that throws on every trap, a `toString` that throws, a revoked Proxy):
// nothing here ever throws, and nothing here calls into such a value outside a `try`.
// Why JavaScript: the Errors are JavaScript objects with this thread's stack, and the
// hostile values can only be inspected here.

//
// Every Error a manager rejects with or reports carries a stable `code` (CODES below):
// those of the native side get theirs from the kind it sends beside each message
// (src/error.rs `ErrorKind`, classified where the messages are worded); those made here
// get theirs where they are made. Errors the app's own callbacks throw are handed on as
// they were thrown when they are Errors (they are the app's), else wrapped with
// TMCP_REDIS_CALLBACK.

const { isProxy } = require('node:util').types;
const { ErrorKind } = require('./binding.js');

const UNSHOWABLE = 'a value that cannot be shown';

/** The stable codes (index.d.ts `TmcpRedisErrorCode`, README table). */
const CODES = Object.freeze({
	/** Never handed to Redis: retrying cannot duplicate it. */
	NOT_SENT: 'TMCP_REDIS_NOT_SENT',
	/** Handed to Redis, no answer within `commandTimeout`: it may still have run. */
	TIMEOUT: 'TMCP_REDIS_TIMEOUT',
	/** No usable connection: refused, lost, TLS, authentication, no node reachable. */
	CONNECTION: 'TMCP_REDIS_CONNECTION',
	/** An error reply from Redis (e.g. NOPERM). */
	REPLY: 'TMCP_REDIS_REPLY',
	/** The manager was closed. */
	CLOSED: 'TMCP_REDIS_CLOSED',
	/** A value read from Redis is corrupt (wrong type, not JSON, not UTF-8, unknown log level). */
	BAD_DATA: 'TMCP_REDIS_BAD_DATA',
	/** A getter's value is not stored (upstream's "… not found for session …"). */
	NOT_FOUND: 'TMCP_REDIS_NOT_FOUND',
	/** An app callback (a controller's enqueue, a subscription's send or close) threw. */
	CALLBACK: 'TMCP_REDIS_CALLBACK',
	/** A bad argument or option: always a TypeError. */
	BAD_ARGUMENT: 'TMCP_REDIS_BAD_ARGUMENT',
});

/**
 * The code of each native `ErrorKind` (src/error.rs), by its number (none given: a
 * reply): NotSentInTime is not sent either (stats() counts it as a timeout).
 * @type {string[]}
 */
const KIND_CODES = [];
KIND_CODES[ErrorKind.Reply] = CODES.REPLY;
KIND_CODES[ErrorKind.NotSent] = CODES.NOT_SENT;
KIND_CODES[ErrorKind.NotSentInTime] = CODES.NOT_SENT;
KIND_CODES[ErrorKind.Timeout] = CODES.TIMEOUT;
KIND_CODES[ErrorKind.Connection] = CODES.CONNECTION;
KIND_CODES[ErrorKind.Closed] = CODES.CLOSED;
KIND_CODES[ErrorKind.BadData] = CODES.BAD_DATA;
/** Whether a native kind is a timeout (for stats()). @param {number} kind */
const isTimeoutKind = (kind) => kind === ErrorKind.Timeout || kind === ErrorKind.NotSentInTime;
/** The kind JavaScript gives a call it could not hand to the native side. */
const NOT_SENT_KIND = ErrorKind.NotSent;
/** The kind of a call refused because its manager is closed. */
const CLOSED_KIND = ErrorKind.Closed;

/**
 * An Error with a code.
 * @param {string} code one of CODES
 * @param {string} message
 * @param {ErrorOptions} [options]
 * @returns {Error & { code: string }}
 */
function codedError(code, message, options) {
	const error = /** @type {Error & { code: string }} */ (new Error(message, options));
	error.code = code;
	return error;
}

/**
 * A TypeError for a bad argument or option (code TMCP_REDIS_BAD_ARGUMENT).
 * @param {string} message
 * @param {ErrorOptions} [options]
 * @returns {TypeError & { code: string }}
 */
function argumentTypeError(message, options) {
	const error = /** @type {TypeError & { code: string }} */ (new TypeError(message, options));
	error.code = CODES.BAD_ARGUMENT;
	return error;
}

/**
 * The Error of a native failure: its message and the code of its kind.
 * @param {number} kind a native ErrorKind (0 when none was given)
 * @param {string} message
 */
function nativeError(kind, message) {
	return codedError(KIND_CODES[kind] ?? CODES.REPLY, message);
}

/** The error of a call refused because the manager is closed. @param {string} message */
function closedError(message) {
	return codedError(CODES.CLOSED, message);
}

/**
 * Whether `value` is an Error that can be handed on as it is: `instanceof` walks the
 * prototype chain, which a Proxy (or a Proxy in the chain) may make throw.
 * @param {unknown} value
 * @param {Function} [kind] Error or one of its subclasses
 * @returns {value is Error}
 */
function isError(value, kind = Error) {
	try {
		return !isProxy(value) && value instanceof kind;
	} catch {
		return false;
	}
}

/**
 * The message of anything thrown: an Error's message, else the value as a string.
 * @param {unknown} value
 * @returns {string}
 */
function describeThrown(value) {
	try {
		if (isError(value)) {
			const { message } = value;
			if (typeof message === 'string') return message;
		}
		return String(value);
	} catch {
		return UNSHOWABLE;
	}
}

/**
 * What was thrown, as an Error: an Error as it is, anything else wrapped (as `cause`).
 * @param {unknown} value
 * @returns {Error}
 */
function toError(value) {
	return isError(value) ? value : codedError(CODES.CALLBACK, describeThrown(value), { cause: value });
}

/**
 * What a call whose arguments could not be read or were refused fails with: our
 * TypeError as it is; anything else (V8's TypeError for a revoked Proxy, whatever a
 * getter or a trap threw) as a TypeError of ours that has it as `cause`.
 * @param {unknown} error
 * @returns {TypeError}
 */
function argumentError(error) {
	if (isError(error, TypeError) && codeOf(error) === CODES.BAD_ARGUMENT) return error;
	if (isError(error, TypeError)) return argumentTypeError(describeThrown(error), { cause: error });
	return argumentTypeError(`An argument could not be read: ${describeThrown(error)}`, { cause: error });
}

/**
 * An Error's `code`, read safely (an app's Error may have a throwing getter).
 * @param {Error} error
 * @returns {unknown}
 */
function codeOf(error) {
	try {
		return /** @type {any} */ (error).code;
	} catch {
		return undefined;
	}
}

const MAX_SHOWN = 100;

/**
 * A short description of an argument for a message (a string quoted, clipped to 100
 * characters; objects only by their kind, so no trap or `toString` of theirs runs).
 * @param {unknown} value
 * @returns {string}
 */
function describe(value) {
	try {
		if (typeof value === 'string') {
			return value.length > MAX_SHOWN ? `${JSON.stringify(value.slice(0, MAX_SHOWN))}… (${value.length} characters)` : JSON.stringify(value);
		}
		if (typeof value === 'bigint') return `${value}n`;
		if (value === null) return 'null';
		if (typeof value === 'function') return 'a function';
		if (typeof value === 'object') return Array.isArray(value) ? 'an array' : 'an object';
		// undefined, a number, a boolean or a Symbol: String() never throws for these.
		return String(value);
	} catch {
		// Array.isArray on a revoked Proxy.
		return typeof value === 'function' ? 'a function' : 'an object';
	}
}

module.exports = {
	isError,
	describeThrown,
	toError,
	argumentError,
	describe,
	CODES,
	isTimeoutKind,
	NOT_SENT_KIND,
	CLOSED_KIND,
	codedError,
	argumentTypeError,
	nativeError,
	closedError,
};
