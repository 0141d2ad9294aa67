import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ServerConnection } from '@jupyterlab/services';

import { APIError, RestAPI } from '../api';

/** A RestAPI whose requests are answered by `answer` (status, body, content type) instead of a server. */
function apiAnswering(status: number, body: string, type = 'application/json'): { api: RestAPI; urls: string[] } {
  const urls: string[] = [];
  const fetch = async (input: RequestInfo | URL): Promise<Response> => {
    urls.push(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    return new Response(body || null, { status, headers: { 'Content-Type': type } });
  };
  const settings = ServerConnection.makeSettings({ baseUrl: 'http://127.0.0.1:8888/lab-base/', fetch });
  return { api: new RestAPI(settings), urls };
}

test('a JSON answer is returned as data, from the cumulo route under the base URL', async () => {
  const { api, urls } = apiAnswering(200, JSON.stringify({ clusters: [], totals: {} }));
  assert.deepEqual(await api.list(), { clusters: [], totals: {} });
  assert.ok(urls[0].startsWith('http://127.0.0.1:8888/lab-base/cumulo/clusters'), urls[0]);
});

test("a refusal is an APIError with the server's message and error code", async () => {
  const { api } = apiAnswering(409, JSON.stringify({ message: 'a cluster named etl is running', error: 'exists' }));
  await assert.rejects(api.launch({ provider: 'local', name: 'etl' }), (err: unknown) => {
    assert.ok(err instanceof APIError);
    assert.equal(err.status, 409);
    assert.equal(err.message, 'a cluster named etl is running');
    assert.equal(err.error, 'exists');
    return true;
  });
});

test('an error page that is not JSON is an APIError with its status, not a SyntaxError', async () => {
  const { api } = apiAnswering(502, '<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>', 'text/html');
  await assert.rejects(api.list(), (err: unknown) => {
    assert.ok(err instanceof APIError, String(err));
    assert.equal(err.status, 502);
    assert.match(err.message, /^502 .*Bad Gateway/);
    return true;
  });
});

test('a 200 that is not JSON says so', async () => {
  const { api } = apiAnswering(200, 'Login required', 'text/plain');
  await assert.rejects(api.prices(), (err: unknown) => {
    assert.ok(err instanceof APIError);
    assert.match(err.message, /not JSON \(Login required\)/);
    return true;
  });
});
