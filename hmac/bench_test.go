package hmac

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
)

// realisticClaims are what a control plane sends for an interactive shell
// on a cloud node: a Deployment pod, a long node name, a subject, random
// sid and jti. The token is about 550 characters.
func realisticClaims(now time.Time) Claims {
	c := Claims{
		SID:       NewID(),
		Namespace: "payments-production",
		Pod:       "checkout-api-7d9f8b6c5d-x2k4q",
		Container: "checkout-api",
		Command:   []string{"/bin/bash", "-l"},
		TTY:       true,
		Stdin:     true,
		Node:      "ip-10-42-117-23.eu-west-1.compute.internal",
	}
	c.Subject = "alice@example.com"
	c.ID = NewID()
	c.IssuedAt = numericDate(now)
	c.ExpiresAt = numericDate(now.Add(time.Minute))
	return c
}

// BenchmarkVerify is one full verification of a realistic token, including
// the single-use check (each iteration verifies a different token).
func BenchmarkVerify(b *testing.B) {
	s, _ := NewSigner(keyA)
	toks := make([]string, b.N)
	for i := range toks {
		toks[i], _ = s.Sign(realisticClaims(t0))
	}
	v, err := NewVerifier(VerifierOptions{Keys: StaticKeys(keyA, keyB), Now: fixedNow(t0), ReplayCapacity: b.N + 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := v.Verify(toks[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(len(toks[0])), "token-chars") // after ResetTimer, which clears metrics
}

// BenchmarkVerifyRejectBadSignature is the cost of refusing a forged token
// (what an attacker can make the proxy spend per attempt).
func BenchmarkVerifyRejectBadSignature(b *testing.B) {
	s, _ := NewSigner(keyA)
	tok, _ := s.Sign(realisticClaims(t0))
	forged := tok[:len(tok)-2] + "AA"
	v, _ := NewVerifier(VerifierOptions{Keys: StaticKeys(keyA), Now: fixedNow(t0)})
	b.ReportAllocs()
	for range b.N {
		if _, err := v.Verify(forged); err == nil {
			b.Fatal("forged token accepted")
		}
	}
}

// BenchmarkReplayCheck is one check-and-record of a fresh jti with n jtis
// already outstanding: flat across n means O(1). The 100k case also
// reports the memory per remembered jti.
func BenchmarkReplayCheck(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run("outstanding="+strconv.Itoa(n), func(b *testing.B) {
			r := newReplayCache(n+b.N+1, DefaultMaxTTL+2*DefaultLeeway)
			for i := range n {
				r.consume("old-"+strconv.Itoa(i), t0.Add(time.Duration(30+i%300)*time.Second), t0)
			}
			jtis := make([]string, b.N)
			for i := range jtis {
				jtis[i] = NewID()
			}
			forget := t0.Add(time.Minute)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if r.consume(jtis[i], forget, t0) != "" {
					b.Fatal("fresh jti refused")
				}
			}
			b.StopTimer()
			if n == 100_000 {
				b.ReportMetric(replayBytesPerJTI(n), "bytes/jti")
			}
		})
	}
}

// BenchmarkSwapToUsable is the delay from the kubelet's ..data rename to
// the new key being usable through a running Keyring (target <= 1 s).
func BenchmarkSwapToUsable(b *testing.B) {
	dir := b.TempDir()
	filewatchtest.WriteSecretDir(b, dir, map[string][]byte{"key": hmactest.NewKey(b)})
	k, err := NewKeyring(KeyringOptions{Dir: dir, PollInterval: time.Hour, Logger: testLogger(&syncBuffer{})})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	<-k.r.Started()
	defer func() { cancel(); <-done }()

	keys := make([][]byte, b.N)
	for i := range keys {
		keys[i] = hmactest.NewKey(b)
	}
	var total, worst time.Duration
	b.ResetTimer()
	for i := range b.N {
		switched := filewatchtest.SwapSecretDir(b, dir, map[string][]byte{"key": keys[i]})
		hmactest.WaitForKey(b, k, KeyID(keys[i]), true, 5*time.Second)
		d := time.Since(switched)
		total += d
		worst = max(worst, d)
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-swap-to-usable")
	b.ReportMetric(float64(worst.Microseconds())/1000, "ms-worst")
}
