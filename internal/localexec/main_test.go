package localexec

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// spdystream's shutdown holds a close error for up to its close
		// timeout (at least 1 s) when nobody reads it, then exits.
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
		// klog starts its flush daemon in init; it lives for the process.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		// client-go's WebSocket ping loop stops on a close frame or at its
		// first failed ping, up to one ping period (5 s) after a connection
		// that ended without a close frame (the disconnect tests).
		goleak.IgnoreTopFunction("k8s.io/client-go/tools/remotecommand.(*heartbeat).start"),
	)
}
