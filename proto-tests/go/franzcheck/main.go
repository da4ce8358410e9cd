// franzcheck: a franz-go (github.com/twmb/franz-go) client for the security proto-tests. It
// connects with TLS (a CA bundle, and for mTLS a PEM keystore: key and certificate chain in one
// file) and/or SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), produces -n records to partition 0 of
// -topic, then reads the partition back from its start, and prints one JSON line:
//
//	{"produced": 20, "produce_error": "", "produce_error_code": 0,
//	 "consumed": 20, "consume_error": "", "values_ok": true}
//
// Errors are reported, not fatal, so a test can assert on a refusal (e.g. error code 29,
// TOPIC_AUTHORIZATION_FAILED). Built by scripts/install-test-deps.sh into .deps/bin.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

type report struct {
	Produced         int    `json:"produced"`
	ProduceError     string `json:"produce_error"`
	ProduceErrorCode int16  `json:"produce_error_code"`
	Consumed         int    `json:"consumed"`
	ConsumeError     string `json:"consume_error"`
	ValuesOK         bool   `json:"values_ok"`
}

func code(err error) int16 {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Code
	}
	return 0
}

func main() {
	brokers := flag.String("brokers", "", "bootstrap servers, comma-separated")
	ca := flag.String("ca", "", "CA bundle (PEM): use TLS")
	keystore := flag.String("keystore", "", "client key and certificate chain (PEM): mTLS")
	mech := flag.String("sasl", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	user := flag.String("user", "", "SASL user")
	password := flag.String("password", "", "SASL password")
	topic := flag.String("topic", "", "topic")
	n := flag.Int("n", 20, "records to produce")
	timeout := flag.Duration("timeout", 20*time.Second, "per phase")
	consumeOnly := flag.Bool("consume-only", false, "skip producing; read -n records")
	flag.Parse()

	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DisableIdempotentWrite(),
		kgo.RecordDeliveryTimeout(*timeout),
		kgo.RetryTimeout(*timeout),
	}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fail(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail(fmt.Errorf("no certificate in %s", *ca))
		}
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if *keystore != "" {
			cert, err := tls.LoadX509KeyPair(*keystore, *keystore)
			if err != nil {
				fail(err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg)) // ServerName: the broker's host
	}
	switch *mech {
	case "":
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: *user, Pass: *password}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: *user, Pass: *password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: *user, Pass: *password}.AsSha512Mechanism()))
	default:
		fail(fmt.Errorf("unknown mechanism %q", *mech))
	}

	var rep report
	if !*consumeOnly {
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			fail(err)
		}
		// past the records' own delivery timeout, so that a record fails with its last error
		// (e.g. SASL_AUTHENTICATION_FAILED) rather than with the context's deadline
		ctx, cancel := context.WithTimeout(context.Background(), *timeout+10*time.Second)
		recs := make([]*kgo.Record, *n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: *topic, Partition: 0, Value: []byte(fmt.Sprintf("franz-%d", i))}
		}
		for _, r := range cl.ProduceSync(ctx, recs...) {
			if r.Err != nil {
				if rep.ProduceError == "" {
					rep.ProduceError = r.Err.Error()
					rep.ProduceErrorCode = code(r.Err)
				}
			} else {
				rep.Produced++
			}
		}
		cancel()
		cl.Close()
		if rep.Produced == 0 {
			out(rep)
			return
		}
	}

	copts := append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		*topic: {0: kgo.NewOffset().AtStart()},
	}))
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		fail(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var values []string
	for len(values) < *n && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && rep.ConsumeError == "" {
				rep.ConsumeError = err.Error()
			}
		})
		fs.EachRecord(func(r *kgo.Record) { values = append(values, string(r.Value)) })
		if rep.ConsumeError != "" {
			break
		}
	}
	rep.Consumed = len(values)
	rep.ValuesOK = len(values) >= *n
	for i := 0; i < *n && i < len(values); i++ {
		if values[i] != fmt.Sprintf("franz-%d", i) {
			rep.ValuesOK = false
		}
	}
	out(rep)
}

func out(r report) {
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "franzcheck:", err)
	os.Exit(2)
}
