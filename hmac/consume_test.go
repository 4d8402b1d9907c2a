package hmac

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCheckDoesNotConsume: Check may be called any number of times; the
// token is spent only by Consume, exactly once however many callers race.
func TestCheckDoesNotConsume(t *testing.T) {
	v := newTestVerifier(t, VerifierOptions{})
	tok := mustSign(t, keyA, validClaims())
	for range 3 {
		if _, err := v.Check(tok); err != nil {
			t.Fatalf("Check: %v", err)
		}
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 50 {
		wg.Go(func() {
			<-start
			c, err := v.Check(tok)
			if err != nil {
				if ReasonOf(err) != ReasonReplayed {
					t.Errorf("Check: %v", err)
				}
				return
			}
			switch err := v.Consume(c); ReasonOf(err) {
			case "":
				wins.Add(1)
			case ReasonReplayed:
			default:
				t.Errorf("Consume: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d of 50 concurrent uses consumed the token, want exactly 1", n)
	}
	if _, err := v.Check(tok); ReasonOf(err) != ReasonReplayed {
		t.Fatalf("Check after Consume: %v, want replayed", err)
	}
	if _, err := v.Verify(tok); ReasonOf(err) != ReasonReplayed {
		t.Fatalf("Verify after Consume: %v, want replayed", err)
	}
}

// TestConsumeAfterExpiry: a token that expired between Check and Consume
// (a slow pod lookup) is not used.
func TestConsumeAfterExpiry(t *testing.T) {
	clk := newClock(t0)
	v := newTestVerifier(t, VerifierOptions{Now: clk.Now})
	c, err := v.Check(mustSign(t, keyA, validClaims()))
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	if err := v.Consume(c); ReasonOf(err) != ReasonExpired {
		t.Fatalf("Consume of an expired token: %v", err)
	}
}
