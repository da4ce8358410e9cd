// franzshare: franz-go's (github.com/twmb/franz-go) share consumer (KIP-932, kgo.ShareGroup)
// for proto-tests/test_share_franz.py (issue 15). Three clients in share group -group read
// the one partition of -topic. A producer first writes "warm-<i>" records until a consumer
// gets one (a new share group starts at the latest offset), then -n records "rec-<i>". The
// consumers acknowledge by the record's number i: i%10 == 3 REJECT, i%10 == 7 RELEASE on its
// first delivery (then ACCEPT), every other ACCEPT. They stop once every record to be
// accepted was accepted and nothing more came for -quiet (so a REJECTed record delivered
// again would be seen). Prints one JSON line:
//
//	{"consumers": [40, 35, 45], "deliveries": {"rec-0": [1], "rec-7": [1, 2]}, "ack_errors": [], "error": ""}
//
// deliveries maps each record to the delivery counts it was received with, in order.
// Errors are reported in "error" and "ack_errors", not fatal. Built by
// scripts/install-test-deps.sh into .deps/bin/franz-share.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type report struct {
	Consumers  []int              `json:"consumers"`
	Deliveries map[string][]int32 `json:"deliveries"`
	AckErrors  []string           `json:"ack_errors"`
	Error      string             `json:"error"`
}

func main() {
	brokers := flag.String("brokers", "", "bootstrap servers, comma-separated")
	group := flag.String("group", "", "share group")
	topic := flag.String("topic", "", "topic (one partition)")
	n := flag.Int("n", 100, "records to produce")
	quiet := flag.Duration("quiet", 3*time.Second, "stop after this long without deliveries, once done")
	timeout := flag.Duration("timeout", 60*time.Second, "for the whole run")
	flag.Parse()

	rep := report{Consumers: make([]int, 3), Deliveries: map[string][]int32{}, AckErrors: []string{}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	seeds := strings.Split(*brokers, ",")

	var mu sync.Mutex
	var warmSeen atomic.Bool
	var lastDelivery atomic.Int64
	accepted := map[int]bool{}
	toAccept := 0
	for i := 0; i < *n; i++ {
		if i%10 != 3 {
			toAccept++
		}
	}
	fail := func(format string, args ...any) {
		mu.Lock()
		if rep.Error == "" {
			rep.Error = fmt.Sprintf(format, args...)
		}
		mu.Unlock()
	}

	clients := make([]*kgo.Client, 3)
	for c := range clients {
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(seeds...),
			kgo.ShareGroup(*group),
			kgo.ConsumeTopics(*topic),
			kgo.ShareMaxRecords(10),
			kgo.FetchMaxWait(500*time.Millisecond),
			kgo.ShareAckCallback(func(_ *kgo.Client, rs kgo.ShareAckResults) {
				if err := rs.Error(); err != nil {
					mu.Lock()
					rep.AckErrors = append(rep.AckErrors, err.Error())
					mu.Unlock()
				}
			}),
		)
		if err != nil {
			fail("client: %v", err)
			break
		}
		clients[c] = cl
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for c, cl := range clients {
		if cl == nil {
			continue
		}
		wg.Add(1)
		go func(c int, cl *kgo.Client) {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(ctx, time.Second)
				fetches := cl.PollRecords(pctx, 10)
				pcancel()
				if ctx.Err() != nil {
					return
				}
				fetches.EachError(func(t string, p int32, err error) {
					if err != context.DeadlineExceeded && err != context.Canceled {
						fail("consumer %d fetch %s/%d: %v", c, t, p, err)
					}
				})
				recs := fetches.Records()
				if len(recs) == 0 {
					continue
				}
				lastDelivery.Store(time.Now().UnixNano())
				for _, r := range recs {
					v := string(r.Value)
					if strings.HasPrefix(v, "warm-") {
						warmSeen.Store(true)
						r.Ack(kgo.AckAccept)
						continue
					}
					i, err := strconv.Atoi(strings.TrimPrefix(v, "rec-"))
					if err != nil {
						fail("unexpected record %q", v)
						continue
					}
					mu.Lock()
					rep.Consumers[c]++
					rep.Deliveries[v] = append(rep.Deliveries[v], r.DeliveryCount())
					switch {
					case i%10 == 3:
						r.Ack(kgo.AckReject)
					case i%10 == 7 && r.DeliveryCount() == 1:
						r.Ack(kgo.AckRelease)
					default:
						r.Ack(kgo.AckAccept)
						accepted[i] = true
					}
					mu.Unlock()
				}
				if err := cl.FlushAcks(ctx); err != nil && ctx.Err() == nil {
					fail("consumer %d flush: %v", c, err)
				}
				time.Sleep(20 * time.Millisecond) // work on the records, so the others get turns
			}
		}(c, cl)
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ProducerLinger(0))
	if err != nil {
		fail("producer: %v", err)
	} else {
		for i := 0; !warmSeen.Load() && ctx.Err() == nil; i++ {
			if err := prod.ProduceSync(ctx, &kgo.Record{Topic: *topic, Value: []byte(fmt.Sprintf("warm-%d", i))}).FirstErr(); err != nil {
				fail("produce warm-up: %v", err)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		for i := 0; i < *n && ctx.Err() == nil; i++ {
			// several batches, so that the three consumers get turns
			r := &kgo.Record{Topic: *topic, Value: []byte(fmt.Sprintf("rec-%d", i))}
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				fail("produce: %v", err)
				break
			}
		}
		prod.Close()
	}
	for ctx.Err() == nil {
		mu.Lock()
		finished := len(accepted) >= toAccept
		mu.Unlock()
		if finished && time.Since(time.Unix(0, lastDelivery.Load())) > *quiet {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ctx.Err() != nil {
		fail("timed out: %d of %d records accepted", len(accepted), toAccept)
	}
	close(done)
	wg.Wait()
	for _, cl := range clients {
		if cl != nil {
			cl.Close()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
}
