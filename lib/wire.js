'use strict';
// Call codes shared with the native side (src/info_sessions.rs, src/stream_sessions.rs).
module.exports = Object.freeze({
	GET_SESSION: 9,
	SET_CLIENT_INFO: 11,
	SET_CLIENT_CAPABILITIES: 13,
	SET_LOG_LEVEL: 15,
	GET_SUBSCRIPTIONS: 16,
	ADD_SUBSCRIPTION: 17,
	REMOVE_SUBSCRIPTION: 18,
	INFO_DELETE: 19,
	HAS: 20,
	PUBLISH: 21,
	BROADCAST: 22,
	STREAM_DELETE: 23,
	MARK_LIVE: 24,
	REFRESH: 25,
	MARK_GONE: 26,
	// Entry kinds of NativeStreams.receive (src/stream_sessions.rs EntryKind).
	DELIVER_MESSAGE: 0,
	DELIVER_BROADCAST: 1,
	DELIVER_CLOSE: 2,
	OP_DONE: 3,
	OP_FAILED: 4,
	// Added to the id of a failed call in the answers (src/delivery.rs CompletionBatch).
	FAILED_ANSWER: 2 ** 32,
});
