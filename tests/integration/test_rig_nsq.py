"""The NSQ part of the rig is real: lookupd lists every nsqd, and a published message is consumed."""

from __future__ import annotations

import subprocess

import pytest

from tests.rig.nsq import NsqCluster
from tests.rig.tools import binary


@pytest.mark.parametrize("nsq_cluster", [{"nsqd": 3, "lookupd": 2}], indirect=True)
def test_every_lookupd_lists_every_nsqd_of_a_topic(nsq_cluster: NsqCluster) -> None:
    for nsqd in nsq_cluster.nsqds:
        nsqd.create_topic("rig-topic")
    expected = sorted(nsqd.tcp_address for nsqd in nsq_cluster.nsqds)
    nsq_cluster.wait_for_producers("rig-topic", expected)
    for lookupd in nsq_cluster.lookupds:
        assert lookupd.producers("rig-topic") == expected
    assert nsq_cluster.lookupds[0].producers("no-such-topic") == []


def test_message_published_to_one_nsqd_is_consumed_from_it(nsq_cluster: NsqCluster) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("rig-topic", "rig-channel")
    assert nsqd.publish("rig-topic", [b"hello from the rig"]) == 1
    tailed = subprocess.run(
        [
            binary("nsq_tail"),
            f"--nsqd-tcp-address={nsqd.tcp_address}",
            "--topic=rig-topic",
            "--channel=rig-channel",
            "--n=1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "hello from the rig" in tailed.stdout
    assert nsqd.channel_stats("rig-topic", "rig-channel")["depth"] == 0
    assert not nsq_cluster.nsqds[1].stats("rig-topic").get("topics")
