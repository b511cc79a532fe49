"""The prediction server: it starts on a free port of 127.0.0.1 in a thread, answers good requests with the
plan's outputs, answers every bad one with a 4xx and a message, keeps serving, and stops."""
import http.client, json, signal, socket, subprocess, sys, threading
import numpy as np
import pytest
from dl_from_scratch.layers import Dense, Flatten
from dl_from_scratch.conv import Conv2D
from dl_from_scratch.model import Sequential
from dl_from_scratch.quantize import InferencePlan, quantize_plan
from dl_from_scratch.serve import PredictionServer, parse_instances, load_plan


@pytest.fixture(scope='module')
def model():
    return Sequential([Conv2D(2, 3, activation='relu', rng=0), Flatten(), Dense(3, activation='softmax', rng=0)],
                      input_shape=(4, 4, 1))


@pytest.fixture
def server(model):
    with PredictionServer(InferencePlan.from_model(model), name='m', max_instances=8, max_body_bytes=4096) as s:
        yield s


def call(server, method, path, body=None, headers=None):
    "(status, JSON) of one request on a fresh connection."
    conn = http.client.HTTPConnection(*server.httpd.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally: conn.close()


def test_binds_loopback_and_answers(server, model):
    assert server.httpd.server_address[0] == '127.0.0.1'
    x = np.random.default_rng(0).random((3, 4, 4, 1)).astype(np.float32)
    status, out = call(server, 'POST', '/v1/models/m:predict', json.dumps({'instances': x.tolist()}))
    assert status == 200
    np.testing.assert_allclose(out['predictions'], model.predict(x), atol=1e-6)
    assert call(server, 'GET', '/v1/models/m') == (200, {'name': 'm', 'input_shape': [4, 4, 1], 'max_instances': 8,
                                                         'max_body_bytes': 4096})


def image_with(last: str) -> bytes:
    "A request with one 4x4x1 image of zeros whose last pixel is the JSON text `last`."
    row = '[[0], [0], [0], [0]]'
    return ('{"instances": [[' + ', '.join([row] * 3 + [f'[[0], [0], [0], [{last}]]']) + ']]}').encode()


@pytest.mark.parametrize('body,status,message', [
    (b'{"instances": [[1, 2, 3]]}', 400, 'expected instances of shape (N, 4, 4, 1), got shape (1, 3)'),
    (image_with('0.5'), 200, ''),
    (image_with('"4"'), 400, "expected a number at instances[0][3][3][0], got a string '4'"),
    (image_with('false'), 400, 'got bool False'),
    (image_with('null'), 400, 'got null'),
    (image_with('Infinity'), 400, 'finite numbers, got Infinity'),
    (image_with('1e400'), 400, 'too large for a float'),
    (b'hello', 400, 'invalid JSON'),
    (b'{"instances": []}', 400, 'N >= 1'),
    (image_with('0')[:-7], 400, 'invalid JSON'),
    (b'{"instances": ' + b'[' * 2000 + b']' * 2000 + b'}', 400, 'expected'),
    (json.dumps({'instances': np.zeros((9, 1, 1, 1)).tolist()}).encode(), 400, 'at most 8 instances per request, got 9'),
    (b'x' * 5000, 413, 'at most 4096 bytes, got 5000'),
])
def test_requests_get_the_right_status_and_message(server, body, status, message):
    got, out = call(server, 'POST', '/v1/models/m:predict', body)
    assert got == status and message in out.get('error', ''), out
    assert call(server, 'GET', '/v1/models/m')[0] == 200             # still serving


def test_too_many_instances(model):
    with PredictionServer(InferencePlan.from_model(model), name='m', max_instances=2) as s:
        status, out = call(s, 'POST', '/v1/models/m:predict', json.dumps({'instances': np.zeros((3, 4, 4, 1)).tolist()}))
    assert status == 400 and 'at most 2 instances per request, got 3' in out['error']


def test_headers_and_paths(server):
    assert call(server, 'POST', '/v1/models/other:predict', b'{}')[0] == 404
    assert call(server, 'GET', '/')[0] == 404
    conn = http.client.HTTPConnection(*server.httpd.server_address[:2], timeout=30)
    conn.putrequest('POST', '/v1/models/m:predict'); conn.endheaders()             # no Content-Length
    r = conn.getresponse(); assert r.status == 411 and 'Content-Length' in json.loads(r.read())['error']; conn.close()
    assert call(server, 'POST', '/v1/models/m:predict', b'{}', {'Content-Length': '-5'})[0] == 400


def test_announced_large_body_is_refused_unread(server):
    conn = http.client.HTTPConnection(*server.httpd.server_address[:2], timeout=30)
    conn.putrequest('POST', '/v1/models/m:predict'); conn.putheader('Content-Length', str(10**9)); conn.endheaders(b'[')
    r = conn.getresponse()
    assert r.status == 413 and '10' in json.loads(r.read())['error']
    conn.close()


def test_concurrent_requests(server, model):
    x = np.random.default_rng(1).random((2, 4, 4, 1)).astype(np.float32)
    want, errors = model.predict(x), []
    def client():
        status, out = call(server, 'POST', '/v1/models/m:predict', json.dumps({'instances': x.tolist()}))
        if status != 200 or not np.allclose(out['predictions'], want, atol=1e-6): errors.append(status)
    ts = [threading.Thread(target=client) for _ in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert not errors


def test_stop_frees_the_port(model):
    s = PredictionServer(InferencePlan.from_model(model)).start()
    host, port = s.httpd.server_address[:2]
    s.stop()
    with pytest.raises(OSError): socket.create_connection((host, port), timeout=5)


def test_serves_files_and_checks_arguments(model, tmp_path):
    ckpt = model.save(tmp_path / 'm.npz')
    plan = quantize_plan(InferencePlan.from_model(model), 'int8', np.random.default_rng(2).random((10, 4, 4, 1)))
    p8 = plan.save(tmp_path / 'p8')
    assert load_plan(ckpt).ops[0]['W'].dtype == np.float32 and load_plan(p8).ops[0]['W'].dtype == np.int8
    with PredictionServer(p8, name='q') as s:
        status, out = call(s, 'POST', '/v1/models/q:predict', json.dumps({'instances': np.ones((1, 4, 4, 1)).tolist()}))
    assert status == 200 and len(out['predictions'][0]) == 3
    with pytest.raises(ValueError, match='InferencePlan or a file path'): PredictionServer(model)
    with pytest.raises(ValueError, match="name of letters"): PredictionServer(plan, name='a/b')


def test_parse_instances_shapes():
    assert parse_instances(b'{"instances": [1.5, 2]}', ()).tolist() == [1.5, 2.0]
    with pytest.raises(ValueError, match='expected a number at instances\\[0\\]'): parse_instances(b'{"instances": [[1]]}', ())


@pytest.mark.parametrize('stop', [signal.SIGINT, signal.SIGTERM])
def test_command_line_serves_a_checkpoint(model, tmp_path, stop):
    ckpt = model.save(tmp_path / 'm.npz')
    # Started as a shell starts a background job, with SIGINT ignored: Ctrl-C must still stop it, as must SIGTERM.
    p = subprocess.Popen([sys.executable, '-c', 'from dl_from_scratch.serve import main; main()', str(ckpt),
                          '--name', 'cli', '--port', '0'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = p.stdout.readline()                                   # "serving ... at http://127.0.0.1:PORT/v1/models/cli ..."
        url = line.split(' at ')[1].split()[0]
        host, port = url.split('//')[1].split('/')[0].split(':')
        assert host == '127.0.0.1'
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request('POST', '/v1/models/cli:predict', json.dumps({'instances': np.zeros((1, 4, 4, 1)).tolist()}))
        r = conn.getresponse()
        out = json.loads(r.read())
        assert r.status == 200
        np.testing.assert_allclose(out['predictions'], model.predict(np.zeros((1, 4, 4, 1), np.float32)), atol=1e-6)
        conn.close()
    finally:
        p.send_signal(stop)
        p.wait(timeout=30)
    assert p.returncode == 0
