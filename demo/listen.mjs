// A minimal MCP 2026-07-28 client for per-request (sessionless) calls and
// `subscriptions/listen` streams: what the demo and the transport test need, over fetch.

export const VERSION = '2026-07-28';

/** The per-request `_meta` a 2026-07-28 client sends with every request. */
export function requestMeta(clientName) {
	return {
		'io.modelcontextprotocol/protocolVersion': VERSION,
		'io.modelcontextprotocol/clientCapabilities': {},
		'io.modelcontextprotocol/clientInfo': { name: clientName, version: '1.0.0' },
	};
}

/** A per-request POST with the headers MCP 2026-07-28 asks for. */
export function post(url, body, signal) {
	const headers = {
		'content-type': 'application/json',
		accept: 'application/json, text/event-stream',
		'mcp-protocol-version': VERSION,
		'mcp-method': body.method,
	};
	if (body.method === 'tools/call') headers['mcp-name'] = body.params.name;
	return fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal });
}

/** Calls a tool per request and returns the JSON-RPC response text. */
export async function callTool(url, id, name, clientName) {
	const response = await post(url, { jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {}, _meta: requestMeta(clientName) } });
	return { status: response.status, text: await response.text() };
}

/**
 * Opens a `subscriptions/listen` stream; `messages` fills with every JSON-RPC message it
 * carries, `close()` ends it (as a client that cancels does) and resolves when reading
 * stopped.
 */
export async function openListen(url, { id, notifications, clientName }) {
	const abort = new AbortController();
	const body = { jsonrpc: '2.0', id, method: 'subscriptions/listen', params: { notifications, _meta: requestMeta(clientName) } };
	const response = await post(url, body, abort.signal);
	const messages = [];
	const reading = (async () => {
		const decoder = new TextDecoder();
		let buffer = '';
		try {
			for await (const chunk of response.body) {
				buffer += decoder.decode(chunk, { stream: true });
				let end;
				while ((end = buffer.indexOf('\n\n')) >= 0) {
					const event = buffer.slice(0, end);
					buffer = buffer.slice(end + 2);
					const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('');
					if (data) messages.push(JSON.parse(data));
				}
			}
		} catch {
			// Ended by close().
		}
	})();
	return {
		status: response.status,
		contentType: response.headers.get('content-type'),
		messages,
		async close() {
			abort.abort();
			await reading;
		},
	};
}
