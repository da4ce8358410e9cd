"""OpenTelemetry traces through a real Jaeger v2: a Python producer sends a W3C `traceparent`
header, the broker's produce span joins that trace (over OTLP http/protobuf, and over gRPC),
and a consumer continues it; Jaeger's query API shows producer -> broker -> consumer as one
trace, with the broker's request, append, fsync and replication-wait spans and the messaging
semantic-convention attributes. Compressed batches are read for headers only when the topic
opts in (`gregor.trace.headers=true`). A picture of the trace lands in the test artefacts.
"""
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cluster import wait_until
from jaeger import Jaeger, parent_of, service_of, span_tags, waterfall_html

PROPAGATOR = TraceContextTextMapPropagator()


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory):
    j = Jaeger(tmp_path_factory.mktemp("jaeger")).start()
    yield j
    j.stop()


def otel_env(endpoint, protocol, service, sampler, arg=None):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_SERVICE_NAME": service, "OTEL_TRACES_SAMPLER": sampler,
           "OTEL_BSP_SCHEDULE_DELAY": "200"}
    if arg is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = str(arg)
    return env


def tracer(jaeger, service):
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_endpoint}/v1/traces")))
    return provider, provider.get_tracer("proto-tests")


def create_topics(bootstrap, topics):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, 1, 1, config=cfg) for name, cfg in topics]).values():
        f.result(15)


def traced_send(tracer_, bootstrap, topic, value, compression="none"):
    """Produces one message inside a PRODUCER span, its context in a traceparent header.
    Returns the trace id (hex) and the producer span's id."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "compression.type": compression, "client.id": "chat-producer"})
    with tracer_.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER,
                                       attributes={"messaging.system": "kafka",
                                                   "messaging.destination.name": topic}) as span:
        carrier = {}
        PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        producer.produce(topic, value=value, key=b"alice",
                         headers=[(k, v.encode()) for k, v in carrier.items()])
        assert producer.flush(15) == 0
        ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def consume_and_continue(tracer_, bootstrap, topic):
    """Reads the topic's first message and processes it in a CONSUMER span that continues the
    trace of its traceparent header. Returns the message value."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "client.id": "chat-consumer"})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            carrier = {k: v.decode() for k, v in (msg.headers() or [])}
            with tracer_.start_as_current_span(f"process {topic}", kind=SpanKind.CONSUMER,
                                               context=PROPAGATOR.extract(carrier)):
                return msg.value()
        raise AssertionError(f"nothing consumed from {topic}")
    finally:
        consumer.close()


def wait_for_spans(jaeger, trace_id, want, timeout=30):
    """Waits until the trace holds spans named as in `want` ({(service, operation), ...})."""
    def ready():
        trace = jaeger.trace(trace_id)
        if not trace:
            return None
        have = {(service_of(trace, s), s["operationName"]) for s in trace["spans"]}
        return trace if want <= have else None
    return wait_until(ready, timeout, f"trace {trace_id} with {sorted(want)}", interval=0.3)


def test_producer_broker_consumer_form_one_trace(jaeger, make_broker, tmp_path):
    broker = make_broker(env=otel_env(jaeger.otlp_http_endpoint, "http/protobuf", "gregor",
                                      "parentbased_traceidratio", 0))
    create_topics(broker.bootstrap, [("chat", {"flush.messages": "1"}),
                                     ("chat-lz4", {"gregor.trace.headers": "true"}),
                                     ("chat-lz4-plain", {})])
    p_provider, p_tracer = tracer(jaeger, "chat-producer")
    c_provider, c_tracer = tracer(jaeger, "chat-consumer")

    trace_id, producer_span = traced_send(p_tracer, broker.bootstrap, "chat", b"hello, trace")
    assert consume_and_continue(c_tracer, broker.bootstrap, "chat") == b"hello, trace"
    want = {("chat-producer", "send chat"), ("gregor", "Produce"), ("gregor", "append"),
            ("gregor", "fsync"), ("gregor", "replication wait"), ("chat-consumer", "process chat")}
    trace = wait_for_spans(jaeger, trace_id, want)
    spans = {(service_of(trace, s), s["operationName"]): s for s in trace["spans"]}

    produce = spans[("gregor", "Produce")]
    assert parent_of(produce) == producer_span, "the broker's span is the producer span's child"
    tags = span_tags(produce)
    assert tags["messaging.system"] == "kafka"
    assert tags["messaging.operation"] == "publish"
    assert tags["messaging.destination.name"] == "chat"
    assert tags["messaging.kafka.destination.partition"] == 0
    assert tags["messaging.client.id"] == "chat-producer"
    assert tags["span.kind"] == "server"
    for child in ("append", "fsync", "replication wait"):
        span = spans[("gregor", child)]
        assert parent_of(span) == produce["spanID"], child
        assert span_tags(span)["messaging.destination.name"] == "chat"
    assert span_tags(spans[("gregor", "append")])["messaging.kafka.offset"] == 0
    assert parent_of(spans[("chat-consumer", "process chat")]) == producer_span

    from browser import Browser
    page = tmp_path / "trace.html"
    page.write_text(waterfall_html(trace, "producer → Gregor → consumer"))
    b = Browser(width=1300, height=700)
    try:
        b.open(page.as_uri())
        b.screenshot("jaeger-trace")
    finally:
        b.close()

    # Compressed: read for the header only where the topic opts in. The sampler takes no
    # unparented request (ratio 0), so a broker span exists only where the link was made.
    plain_id, _ = traced_send(p_tracer, broker.bootstrap, "chat-lz4-plain", b"x" * 2000, "lz4")
    lz4_id, lz4_parent = traced_send(p_tracer, broker.bootstrap, "chat-lz4", b"x" * 2000, "lz4")
    lz4 = wait_for_spans(jaeger, lz4_id, {("chat-producer", "send chat-lz4"),
                                          ("gregor", "Produce"), ("gregor", "append")})
    assert parent_of(next(s for s in lz4["spans"] if s["operationName"] == "Produce")) == lz4_parent
    time.sleep(1.5)
    plain = jaeger.trace(plain_id)
    assert plain and {service_of(plain, s) for s in plain["spans"]} == {"chat-producer"}
    p_provider.shutdown()
    c_provider.shutdown()


def test_grpc_export_and_fetch_spans(jaeger, make_broker):
    broker = make_broker(env=otel_env(jaeger.otlp_grpc_endpoint, "grpc", "gregor-grpc",
                                      "always_on"))
    create_topics(broker.bootstrap, [("orders", {})])
    producer = Producer({"bootstrap.servers": broker.bootstrap, "client.id": "orders-app"})
    producer.produce("orders", value=b"order 1")
    assert producer.flush(15) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "orders-reader",
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    consumer.subscribe(["orders"])
    got = None
    deadline = time.monotonic() + 30
    while got is None and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got = msg.value()
    consumer.close()
    assert got == b"order 1"

    def find(operation, child=None):
        for trace in jaeger.traces("gregor-grpc", limit=200):
            for s in trace["spans"]:
                if s["operationName"] != operation:
                    continue
                tags = span_tags(s)
                if tags.get("messaging.destination.name") != "orders":
                    continue
                kids = [c for c in trace["spans"] if parent_of(c) == s["spanID"]]
                if child is None or any(c["operationName"] == child for c in kids):
                    return s, tags
        return None

    produce, tags = wait_until(lambda: find("Produce", "append"), 30, "a Produce span over gRPC")
    assert tags["messaging.client.id"] == "orders-app"
    fetch, tags = wait_until(lambda: find("Fetch", "fetch wait"), 30, "a Fetch span that waited")
    assert tags["messaging.operation"] == "receive"
    assert tags["messaging.system"] == "kafka"
