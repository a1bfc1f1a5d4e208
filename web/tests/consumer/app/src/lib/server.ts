// Where the headcount server is: ?url=...&key=... on the page's address (the tests start the
// server on a free port); a real app would hard-code these or read them from its env.
import { page } from '$app/state';

export function server(): { url: string; anonKey: string } {
	return {
		url: page.url.searchParams.get('url') ?? 'http://127.0.0.1:4000',
		anonKey: page.url.searchParams.get('key') ?? ''
	};
}
