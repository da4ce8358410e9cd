"""The web console (/console on the admin port) in a real browser: headless Chromium opens every
page of a three-broker cluster that holds data and a consumer group, and checks what a person
would read there: brokers, controller and Raft voters; partitions with leaders and ISR; the
group's member, assignment and lag per partition (numbers made by the test); a message's JSON
value and headers; live throughput. Pages are read through a broker that is not the group's
coordinator, so what it does not hold comes from its peers. Screenshots of each page land in
the test artefacts (browser.py).

With SASL and the authorizer on, the console asks for HTTP Basic credentials of the broker's
SCRAM users and the message browser obeys the viewer's ACLs: alice (READ) sees the message,
bob (DESCRIBE only) is refused, as a consumer with bob's principal would be.
"""
import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from browser import Browser
from cluster import Cluster, wait_until
from security import (SCRAM_USERS, acl, certs, create_acls, create_topics,  # noqa: F401
                      new_secure_target, produce, rdkafka_conf, sasl, serving, upsert_scram)

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TOPIC, LIVE, GROUP = "orders", "clicks", "billing"
PER_PARTITION = 10
# Committed offsets of the group, per partition of TOPIC: lag = PER_PARTITION - committed.
COMMITTED = {0: 4, 1: 10, 2: 0}
LAG = {p: PER_PARTITION - c for p, c in COMMITTED.items()}


class LiveLoad(threading.Thread):
    """Produces to LIVE at a steady few hundred messages per second until stopped."""

    def __init__(self, bootstrap):
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        self.done = threading.Event()

    def run(self):
        i = 0
        while not self.done.is_set():
            for _ in range(20):
                self.producer.produce(LIVE, value=f"click {i}".encode())
                i += 1
            self.producer.poll(0)
            time.sleep(0.05)
        self.producer.flush(10)

    def stop(self):
        self.done.set()
        self.join(15)


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """A 3-broker cluster with TOPIC (3 partitions, RF 3, PER_PARTITION JSON messages each),
    GROUP's one live member with COMMITTED offsets, and a steady load on LIVE; yields
    (cluster, the node the console is read from, a Browser)."""
    c = Cluster(tmp_path_factory.mktemp("console-cluster"), 3)
    load = consumer = browser = None
    try:
        c.start()
        c.create_topic(TOPIC, 3)
        c.create_topic(LIVE, 1, rf=1)
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
        for part in range(3):
            for i in range(PER_PARTITION):
                p.produce(TOPIC, partition=part, key=f"customer-{i}".encode(),
                          value=json.dumps({"order": i, "partition": part}).encode(),
                          headers=[("source", b"proto-tests")])
        assert p.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": GROUP,
                             "client.id": "billing-app", "enable.auto.commit": False,
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([TOPIC])
        wait_until(lambda: consumer.poll(0.2) is not None and len(consumer.assignment()) == 3,
                   30, "the group's member owns the topic's partitions")
        consumer.commit(offsets=[TopicPartition(TOPIC, part, off)
                                 for part, off in COMMITTED.items()], asynchronous=False)
        load = LiveLoad(c.bootstrap)
        load.start()
        coordinator = group_coordinator(c)
        node = next(i for i in sorted(c.nodes) if i != coordinator)
        browser = Browser()
        yield c, c.node(node), browser
    finally:
        if browser:
            browser.close()
        if load:
            load.stop()
        if consumer:
            consumer.close()
        crashed = c.crashed()
        codes = c.shutdown()
    assert not crashed, f"nodes died during the tests: {crashed}"
    assert all(code == 0 for code in codes.values()), f"SIGTERM exit codes: {codes}"


@pytest.fixture
def cluster_console(request, console):
    request.node._gregor_brokers = list(console[0].nodes.values())
    return console


def group_coordinator(c):
    from confluent_kafka.admin import AdminClient
    a = AdminClient({"bootstrap.servers": c.bootstrap})
    desc = a.describe_consumer_groups([GROUP])[GROUP].result(15)
    return desc.coordinator.id


def url(node, path):
    return f"http://127.0.0.1:{node.admin_port}{path}"


def rows(driver, table):
    """Each row of table#<table> as its cells' texts."""
    return [[td.text for td in tr.find_elements("tag name", "td")]
            for tr in driver.find_elements("css selector", f"#{table} tbody tr")]


def test_cluster_page(cluster_console):
    c, _, b = cluster_console
    controller = c.controller()
    d = b.open(url(c.node(controller), "/console"))
    assert d.current_url.endswith("/console/cluster")
    brokers = rows(d, "brokers")
    assert sorted(r[0] for r in brokers) == ["1", "2", "3"]
    assert all(r[3] == "live" for r in brokers), brokers
    assert d.find_element("id", "controller").text == f"broker {controller}"
    assert d.find_element("id", "fenced").text == "Fenced brokers: none"
    raft = rows(d, "raft")
    assert sorted(r[0] for r in raft) == ["1", "2", "3"]
    assert all(r[1].startswith("voter") for r in raft), raft
    # On the controller every voter's replication lag is known, and small.
    assert all(r[4].isdigit() and int(r[4]) < 1000 for r in raft), raft
    b.screenshot("console-cluster")


def test_topic_pages_show_leaders_and_isr(cluster_console):
    c, node, b = cluster_console
    d = b.open(url(node, "/console/topics"))
    row = next(r for r in rows(d, "topics") if r[0] == TOPIC)
    assert row[1:5] == ["3", "3", "0", "0"], row  # partitions, RF, under-replicated, offline
    b.screenshot("console-topics")
    d.find_element("link text", TOPIC).click()
    wait_until(lambda: d.find_elements("id", "partitions"), 10, "the topic page")
    leaders = c.leaders(TOPIC)
    parts = rows(d, "partitions")
    assert [r[0] for r in parts] == ["0", "1", "2"]
    for r in parts:
        assert r[1] == str(leaders[int(r[0])]), r
        assert sorted(int(x) for x in r[3].split(", ")) == [1, 2, 3], r  # ISR
        assert r[6] == str(PER_PARTITION), r  # high watermark
    configs = {r[0]: r[1] for r in rows(d, "configs")}
    assert configs["cleanup.policy"] == "delete"
    b.screenshot("console-topic")


def test_group_pages_show_member_assignment_and_lag(cluster_console):
    c, node, b = cluster_console
    d = b.open(url(node, "/console/groups"))
    # The list's lag comes from the sampler (every 5 s).
    def listed():
        d.refresh()
        r = next((r for r in rows(d, "groups") if r[0] == GROUP), None)
        return r if r and r[3] == str(sum(LAG.values())) else None
    row = wait_until(listed, 20, "the group listed with its lag", interval=1)
    assert row[1] == "Stable", row
    b.screenshot("console-groups")
    d.find_element("link text", GROUP).click()
    wait_until(lambda: d.find_elements("id", "total-lag"), 10, "the group page")
    assert d.find_element("id", "state").text == "Stable"
    assert d.find_element("id", "total-lag").text == str(sum(LAG.values()))
    members = rows(d, "members")
    assert len(members) == 1 and members[0][1] == "billing-app", members
    assert sorted(members[0][3].split(", ")) == [f"{TOPIC}-{p}" for p in range(3)]
    lag = {int(r[1]): (int(r[2]), int(r[3]), int(r[4])) for r in rows(d, "lag") if r[0] == TOPIC}
    assert lag == {p: (COMMITTED[p], PER_PARTITION, LAG[p]) for p in range(3)}, lag
    chart = d.find_element("id", "lag-chart")
    assert int(chart.get_attribute("data-points")) >= 1, "the lag chart drew its samples"
    b.screenshot("console-group")


def test_group_lag_metric_comes_once_from_the_coordinator(cluster_console):
    """gregor_consumer_group_lag (the dashboard's lag panel, the lag alert) is exported by the
    group's coordinator only, so summing it over the cluster counts each partition once."""
    c, _, _ = cluster_console
    coordinator = group_coordinator(c)
    pattern = re.compile(r'^gregor_consumer_group_lag\{group="%s",topic="%s",partition="(\d+)"\} '
                         r'(\d+)$' % (GROUP, TOPIC), re.M)

    def lags():
        found = {}
        for i, n in c.nodes.items():
            with _HTTP.open(url(n, "/metrics"), timeout=5) as r:
                found[i] = {int(p): int(v) for p, v in pattern.findall(r.read().decode())}
        return found if found[coordinator] == LAG else None
    found = wait_until(lags, 20, "the coordinator's lag metric", interval=1)
    assert all(not v for i, v in found.items() if i != coordinator), found


def test_message_browser_shows_values_and_headers(cluster_console):
    c, node, b = cluster_console
    d = b.open(url(node, "/console/messages"))
    assert TOPIC in [o.text for o in d.find_elements("css selector", "select[name=topic] option")]
    d = b.open(url(node, f"/console/messages?topic={TOPIC}&partition=1&offset=3&limit=5"))
    shown = d.find_elements("css selector", "#messages tbody tr")
    assert [r.get_attribute("data-offset") for r in shown] == ["3", "4", "5", "6", "7"]
    first = shown[0]
    assert first.find_element("class name", "key").text == "customer-3"
    assert json.loads(first.find_element("class name", "value").text) == \
        {"order": 3, "partition": 1}
    assert first.find_element("class name", "headers").text == "source: proto-tests"
    b.screenshot("console-messages")
    d.find_element("id", "next").click()
    wait_until(lambda: d.find_elements("css selector", "#messages tbody tr[data-offset='8']"),
               10, "the next page of messages")
    hexed = b.open(url(node, f"/console/messages?topic={TOPIC}&partition=0&offset=0"
                             "&limit=1&format=hex"))
    value = hexed.find_element("css selector", "#messages .value").text
    assert value.startswith("7b 22 6f 72 64 65 72 22"), value  # {"order"


def test_live_throughput(cluster_console):
    c, node, b = cluster_console
    d = b.open(url(node, "/console/throughput"))

    def rate():
        cells = d.find_elements("css selector", f"#throughput tr[data-topic='{LIVE}'] .messages")
        return cells and float(cells[0].text) > 50 and cells[0].text
    # The table refreshes itself from throughput.json every 5 s.
    wait_until(rate, 30, f"{LIVE} shown at tens of messages per second", interval=0.5)
    assert int(d.find_element("id", "throughput-chart").get_attribute("data-points")) >= 1
    b.screenshot("console-throughput")


# --- authentication and ACLs ----------------------------------------------------------------

@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory, certs):  # noqa: F811
    b = new_secure_target(tmp_path_factory.mktemp("console-secure"), certs,
                          listeners=("PLAINTEXT", "SASL_SSL"))
    with serving(b):
        upsert_scram(b, certs)
        create_topics(b, certs, ["payroll"])
        create_acls(b, certs, [acl("User:alice", "topic", "payroll", "READ"),
                               acl("User:bob", "topic", "payroll", "DESCRIBE")])
        acked, _, _ = produce(rdkafka_conf(f"127.0.0.1:{b.listener_ports['SASL_SSL']}", certs,
                                           sasl("SASL_SSL", "SCRAM-SHA-512", "admin")),
                              "payroll", [b"salary: 42"])
        assert len(acked) == 1
        yield b


def get(broker, path, user=None, password=None):
    req = urllib.request.Request(url(broker, path))
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with _HTTP.open(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_console_requires_scram_credentials_and_obeys_acls(request, secure_broker):
    b = secure_broker
    request.node._gregor_brokers = [b]
    browse = "/console/messages?topic=payroll&partition=0&offset=0"
    status, _ = get(b, "/console/cluster")
    assert status == 401
    assert get(b, "/console/cluster", "alice", "wrong-password")[0] == 401
    assert get(b, "/console/cluster", "mallory", "x")[0] == 401
    status, page = get(b, browse, "alice", SCRAM_USERS["alice"])
    assert status == 200 and "salary: 42" in page and "User:alice" in page
    status, page = get(b, browse, "bob", SCRAM_USERS["bob"])
    assert status == 403 and "salary" not in page, page
    # bob may describe the topic, so he sees it listed; he may not read it.
    status, page = get(b, "/console/topics", "bob", SCRAM_USERS["bob"])
    assert status == 200 and "payroll" in page
    # In the browser, with the credentials in the address.
    br = Browser(width=1100, height=500)
    try:
        port = b.admin_port
        d = br.open(f"http://alice:{SCRAM_USERS['alice']}@127.0.0.1:{port}{browse}")
        assert "salary: 42" in d.find_element("css selector", "#messages .value").text
        br.screenshot("console-messages-alice")
        br.close()
        br = Browser(width=1100, height=500)
        d = br.open(f"http://bob:{SCRAM_USERS['bob']}@127.0.0.1:{port}{browse}")
        assert "not authorized to read topic payroll" in br.text()
        br.screenshot("console-messages-bob-refused")
    finally:
        br.close()
