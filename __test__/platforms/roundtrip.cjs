// Runs inside an arm64 Node under qemu-user: the package's JavaScript with the arm64
// binary (NAPI_RS_NATIVE_LIBRARY_PATH) against the redis-server at argv[2]. Prints one
// JSON line with what it saw.
const { RedisStreamSessionManager, RedisInfoSessionManager } = require('../../index.js');

async function main() {
	const url = process.argv[2];
	const streams = new RedisStreamSessionManager(url);
	const info = new RedisInfoSessionManager(url);
	const received = [];
	let closed = false;
	const controller = { enqueue: (c) => received.push(new TextDecoder().decode(c)), close: () => (closed = true) };
	await streams.create('arm', controller);
	await streams.send(['arm'], 'hello from arm64');
	for (let i = 0; i < 200 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 25));
	const hasBefore = await streams.has('arm');
	await streams.delete('arm');
	const hasAfter = await streams.has('arm');
	await info.setClientInfo('arm', { name: 'arm64', version: '1' });
	await info.setLogLevel('arm', 'notice');
	const clientInfo = await info.getClientInfo('arm');
	const logLevel = await info.getLogLevel('arm');
	await streams.close();
	await info.close();
	console.log(JSON.stringify({ arch: process.arch, received, hasBefore, hasAfter, closed, clientInfo, logLevel }));
}

main().catch((error) => {
	console.error(error);
	process.exit(1);
});
