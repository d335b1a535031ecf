'use strict';
// The codes JavaScript and the native side share, defined once in Rust: call codes
// (src/info_sessions.rs, src/stream_sessions/ops.rs), the change kinds of
// NativeStreams.apply (src/stream_sessions/mod.rs), the interest flags of
// NativeSubscriptions.watch (src/subscriptions/mod.rs), the delivery kinds
// (src/delivery.rs DeliveryKind) and the offset of a failed call's id in the answers
// (src/delivery.rs), the log levels and the names of a session's three values
// (src/info_sessions.rs).
// Copied into one frozen object so hot paths read plain properties.
const native = require('./binding.js');

module.exports = Object.freeze({
	GET_SESSION: native.GET_SESSION,
	SET_CLIENT_INFO: native.SET_CLIENT_INFO,
	SET_CLIENT_CAPABILITIES: native.SET_CLIENT_CAPABILITIES,
	SET_LOG_LEVEL: native.SET_LOG_LEVEL,
	GET_SUBSCRIPTIONS: native.GET_SUBSCRIPTIONS,
	ADD_SUBSCRIPTION: native.ADD_SUBSCRIPTION,
	REMOVE_SUBSCRIPTION: native.REMOVE_SUBSCRIPTION,
	INFO_DELETE: native.INFO_DELETE,
	HAS: native.HAS,
	PUBLISH: native.PUBLISH,
	BROADCAST: native.BROADCAST,
	STREAM_DELETE: native.STREAM_DELETE,
	CHANGE_CREATE: native.CHANGE_CREATE,
	CHANGE_DROP: native.CHANGE_DROP,
	DELIVER_MESSAGE: native.DeliveryKind.Message,
	DELIVER_BROADCAST: native.DeliveryKind.Broadcast,
	DELIVER_CLOSE: native.DeliveryKind.Close,
	DELIVER_PROBLEM: native.DeliveryKind.Problem,
	NOTIFY: native.NOTIFY,
	WANTS_TOOLS_LIST_CHANGED: native.WANTS_TOOLS_LIST_CHANGED,
	WANTS_PROMPTS_LIST_CHANGED: native.WANTS_PROMPTS_LIST_CHANGED,
	WANTS_RESOURCES_LIST_CHANGED: native.WANTS_RESOURCES_LIST_CHANGED,
	FAILED_ANSWER: native.FAILED_ANSWER,
	LOG_LEVELS: Object.freeze(native.LOG_LEVELS.split(' ')),
	SESSION_FIELDS: Object.freeze(native.SESSION_FIELDS.split(',')),
});
