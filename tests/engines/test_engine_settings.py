"""What the console decides about an engine from the instance's settings and a server's figures."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from console.host.engines import server_for
from console.host.server import ModelServer
from console.host.vllm import VllmServer, parse_metrics, quantile, window
from console.instances.engines import launch_command, launch_warnings, shutdown_timeout_of
from console.instances.models import Instance
from tests.factories import process_instance

VLLM = ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/srv/models/glm"]


@pytest.mark.django_db
def test_a_vllm_command_is_launched_with_the_drain_timeout_unless_it_sets_its_own():
    instance = process_instance("v-a", command=VLLM, engine="vllm", drain_timeout=25, stop_timeout=40)
    assert launch_command(instance, VLLM)[len(VLLM) :] == ["--shutdown-timeout", "25", "--enable-server-load-tracking"]
    for said in ("--no-enable-server-load-tracking", "--enable-server-load-tracking=false"):
        own = [*VLLM, "--shutdown-timeout=50", said]
        assert launch_command(instance, own) == own  # the operator's choices, kept
    assert shutdown_timeout_of(own) == 50
    glm = process_instance("g-a", command=["python", "-m", "inference.server"])
    assert launch_command(glm, glm.command) == glm.command  # our server drains on SIGTERM by itself


@pytest.mark.django_db
def test_warnings_name_what_would_hurt_clients_at_a_restart():
    fine = process_instance("v-b", command=VLLM, engine="vllm", drain_timeout=20, stop_timeout=35)
    assert launch_warnings(fine) == []
    tight = process_instance("v-c", command=VLLM, engine="vllm", drain_timeout=30, stop_timeout=30)
    assert "stop timeout" in launch_warnings(tight)[0]
    compose = Instance(name="v-d", runtime="docker", container_name="vllm-1", engine="vllm", host=fine.host)
    assert "cannot add it" in launch_warnings(compose)[0]
    assert launch_warnings(process_instance("g-b", command=["x"])) == []


@pytest.mark.django_db
def test_vllm_has_no_restart_in_place():
    instance = process_instance("v-e", command=VLLM)
    instance.engine, instance.restart_in_place = "vllm", True
    with pytest.raises(ValidationError) as refused:
        instance.full_clean()
    assert "restart_in_place" in refused.value.message_dict


@pytest.mark.django_db
def test_register_instance_with_the_vllm_engine(capsys):
    call_command(
        "register_instance",
        "v-f",
        *("--engine", "vllm", "--host", "local", "--url", "http://127.0.0.1:8001", "--drain-timeout", "20"),
        *("--command", json.dumps(VLLM)),
    )
    instance = Instance.objects.get(name="v-f")
    assert instance.engine == "vllm" and instance.drain_timeout == 20
    assert instance.stop_timeout == 35  # outlasts the --shutdown-timeout it is launched with
    assert "warning" not in capsys.readouterr().err
    assert isinstance(server_for(instance), VllmServer) and not isinstance(
        server_for(process_instance("g-c", command=["x"])), VllmServer
    )
    assert type(server_for(Instance.objects.get(name="g-c"))) is ModelServer


def histogram(name: str, buckets: dict) -> str:
    lines = [f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{le="{le}"}} {count}' for le, count in buckets.items()]
    lines += [f"{name}_count {list(buckets.values())[-1]}", f"{name}_sum 1.0"]
    return "\n".join(lines)


def test_quantiles_come_from_the_requests_of_the_window():
    before = parse_metrics(histogram("vllm:e2e_request_latency_seconds", {"0.1": 10, "0.5": 10, "1.0": 10, "+Inf": 10}))
    now = parse_metrics(histogram("vllm:e2e_request_latency_seconds", {"0.1": 10, "0.5": 14, "1.0": 20, "+Inf": 20}))
    recent = window(now.buckets["e2e"], before.buckets["e2e"])
    # the 10 requests since the last scrape: 4 in (0.1, 0.5], 6 in (0.5, 1.0]
    assert quantile(0.5, recent) == pytest.approx(0.5 + 0.5 * (5 - 4) / 6)
    assert quantile(0.95, recent) == pytest.approx(0.5 + 0.5 * (9.5 - 4) / 6)
    assert quantile(0.5, now.buckets["e2e"]) == pytest.approx(0.1)  # since the start: mostly fast
    restarted = parse_metrics(histogram("vllm:e2e_request_latency_seconds", {"0.1": 1, "0.5": 1, "1.0": 1, "+Inf": 1}))
    assert window(restarted.buckets["e2e"], now.buckets["e2e"]) == restarted.buckets["e2e"]  # counts fell: new process
    assert quantile(0.5, [(0.1, 0), (float("inf"), 0)]) is None
    beyond = [(0.1, 0), (1.0, 0), (float("inf"), 5)]
    assert quantile(0.5, beyond) == 1.0  # past the last finite bound: that bound is all that is known


def test_garbage_metrics_are_left_out_not_raised():
    scrape = parse_metrics('vllm:num_requests_running{engine="0"} 2\nvllm:num_requests_waiting 1\nsomething else 3\n')
    assert scrape.gauges == {"running": 2.0, "waiting": 1.0}  # the line that is not a metric is left out
    assert parse_metrics("not { prometheus").gauges == {}


def test_only_the_families_read_are_parsed_and_only_so_many_lines_of_them():
    """Megabytes a broken or hostile server sends are not all parsed each round (bench/vllm_metrics_bench.py):
    a broken line of another family no longer sends every line to be parsed alone, and lines of a read
    family past what any vLLM sends are left out."""
    from console.host.vllm import MAX_LINES

    other = 'python_gc_objects_collected_total{generation="0"} 1.0\n'
    histogram_text = histogram("vllm:e2e_request_latency_seconds", {"0.1": 3, "+Inf": 4})
    scrape = parse_metrics("x{ broken\n" + other * 1000 + histogram_text + "\nvllm:num_requests_waiting 2\n")
    assert scrape.gauges == {"waiting": 2.0} and scrape.buckets["e2e"] == [(0.1, 3.0), (float("inf"), 4.0)]
    samples = "".join(f'vllm:num_requests_running{{i="{i}"}} 1\n' for i in range(MAX_LINES + 5000))
    flood = parse_metrics("# TYPE vllm:num_requests_running gauge\n" + samples)
    assert flood.gauges == {"running": float(MAX_LINES - 1)}  # the TYPE line, then as many samples as fit


def test_what_vllm_says_it_holds_is_read_only_when_it_is_its_answer():
    """GET /load from a real HTTP server answering in turn: vLLM's count, a count below 0 (read as 0),
    and what no vLLM says (a boolean, another JSON, not JSON, an error status: unknown, never raised)."""
    import http.server
    import threading

    answers = [
        (200, b'{"server_load": 3}'),
        (200, b'{"server_load": -2}'),
        (200, b'{"server_load": true}'),
        (200, b"[3]"),
        (200, b"not json"),
        (404, b'{"detail": "Not Found"}'),
    ]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answers.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = VllmServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    try:
        assert [server.held() for _ in range(6)] == [3, 0, None, None, None, None]
    finally:
        server.close()
        httpd.shutdown()
        httpd.server_close()
