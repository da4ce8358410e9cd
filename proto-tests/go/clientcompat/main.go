// clientcompat: produces and consumes in a group with Sarama (github.com/IBM/sarama) or
// segmentio/kafka-go at their default settings, for proto-tests/test_more_clients.py.
//
//	client-compat -lib sarama|segmentio -bootstrap host:port -topic t -group g -n 500
//
// The topic is created with 3 partitions through the library's own admin call. -n keyed
// records are produced, then two consumers in one group read from the earliest offset (the
// only setting changed from Sarama's defaults, which start at the newest offset; kafka-go's
// group reader starts at the first offset by default) until every record has arrived. Prints
// one JSON line {"produced": n, "consumed": n, "distinct": n, "members": [a, b]} and exits
// non-zero on any error. Built by scripts/install-test-deps.sh into .deps/bin.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/IBM/sarama"
	kafkago "github.com/segmentio/kafka-go"
)

type tally struct {
	mu      sync.Mutex
	seen    map[string]string
	members []int
}

func (t *tally) add(member int, key, value string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.members[member]++
	t.seen[key] = value
}

func (t *tally) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen)
}

func record(i int) (string, string) {
	return fmt.Sprintf("k%d", i), fmt.Sprintf("record-%d", i)
}

func main() {
	lib := flag.String("lib", "", "sarama or segmentio")
	bootstrap := flag.String("bootstrap", "", "host:port")
	topic := flag.String("topic", "", "topic to create and use")
	group := flag.String("group", "", "consumer group")
	n := flag.Int("n", 500, "records")
	flag.Parse()

	t := &tally{seen: map[string]string{}, members: make([]int, 2)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var err error
	switch *lib {
	case "sarama":
		err = runSarama(ctx, *bootstrap, *topic, *group, *n, t)
	case "segmentio":
		err = runSegmentio(ctx, *bootstrap, *topic, *group, *n, t)
	default:
		err = fmt.Errorf("unknown -lib %q", *lib)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	for i := 0; i < *n; i++ {
		k, v := record(i)
		if t.seen[k] != v {
			fmt.Fprintf(os.Stderr, "record %s: got %q\n", k, t.seen[k])
			os.Exit(1)
		}
	}
	out, _ := json.Marshal(map[string]any{
		"produced": *n, "consumed": t.members[0] + t.members[1],
		"distinct": len(t.seen), "members": t.members,
	})
	fmt.Println(string(out))
}

// waitAll polls until every record has been seen or ctx ends.
func waitAll(ctx context.Context, t *tally, n int) error {
	for t.size() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out with %d of %d records", t.size(), n)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func runSarama(ctx context.Context, bootstrap, topic, group string, n int, t *tally) error {
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, cfg)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	admin.Close()

	producer, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	msgs := make([]*sarama.ProducerMessage, 0, n)
	for i := 0; i < n; i++ {
		k, v := record(i)
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(k), Value: sarama.StringEncoder(v)})
	}
	if err := producer.SendMessages(msgs); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	producer.Close()

	ccfg := sarama.NewConfig()
	ccfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for m := 0; m < 2; m++ {
		cg, err := sarama.NewConsumerGroup([]string{bootstrap}, group, ccfg)
		if err != nil {
			return fmt.Errorf("consumer group: %w", err)
		}
		wg.Add(1)
		go func(m int) {
			defer wg.Done()
			defer cg.Close()
			h := saramaHandler{member: m, t: t}
			for runCtx.Err() == nil {
				if err := cg.Consume(runCtx, []string{topic}, h); err != nil && runCtx.Err() == nil {
					errs <- fmt.Errorf("consume: %w", err)
					return
				}
			}
		}(m)
	}
	err = waitAll(ctx, t, n)
	stop()
	wg.Wait()
	select {
	case e := <-errs:
		return e
	default:
	}
	return err
}

type saramaHandler struct {
	member int
	t      *tally
}

func (saramaHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (saramaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for msg := range c.Messages() {
		h.t.add(h.member, string(msg.Key), string(msg.Value))
		s.MarkMessage(msg, "")
	}
	return nil
}

func runSegmentio(ctx context.Context, bootstrap, topic, group string, n int, t *tally) error {
	client := &kafkago.Client{Addr: kafkago.TCP(bootstrap)}
	resp, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{
		Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}},
	})
	if err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	if e := resp.Errors[topic]; e != nil {
		return fmt.Errorf("create topic: %w", e)
	}

	w := &kafkago.Writer{Addr: kafkago.TCP(bootstrap), Topic: topic}
	msgs := make([]kafkago.Message, 0, n)
	for i := 0; i < n; i++ {
		k, v := record(i)
		msgs = append(msgs, kafkago.Message{Key: []byte(k), Value: []byte(v)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	w.Close()

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for m := 0; m < 2; m++ {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{bootstrap}, GroupID: group, Topic: topic})
		wg.Add(1)
		go func(m int) {
			defer wg.Done()
			defer r.Close()
			for {
				msg, err := r.ReadMessage(runCtx)
				if err != nil {
					if runCtx.Err() == nil {
						errs <- fmt.Errorf("read: %w", err)
					}
					return
				}
				t.add(m, string(msg.Key), string(msg.Value))
			}
		}(m)
	}
	err = waitAll(ctx, t, n)
	stop()
	wg.Wait()
	select {
	case e := <-errs:
		return e
	default:
	}
	return err
}
