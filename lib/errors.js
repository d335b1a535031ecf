'use strict';
// Turning values the app passed or threw into Errors and messages. The values may be
// hostile (a Proxy that throws on every trap, a `toString` that throws, a revoked Proxy):
// nothing here ever throws, and nothing here calls into such a value outside a `try`.

const { isProxy } = require('node:util').types;

const UNSHOWABLE = 'a value that cannot be shown';

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
	return isError(value) ? value : new Error(describeThrown(value), { cause: value });
}

/**
 * What a call whose arguments could not be read or were refused fails with: a TypeError
 * (ours, or V8's for a revoked Proxy) as it is; anything else a getter or a trap threw, as
 * a TypeError that has it as `cause`.
 * @param {unknown} error
 * @returns {TypeError}
 */
function argumentError(error) {
	if (isError(error, TypeError)) return error;
	return new TypeError(`An argument could not be read: ${describeThrown(error)}`, { cause: error });
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

module.exports = { isError, describeThrown, toError, argumentError, describe };
