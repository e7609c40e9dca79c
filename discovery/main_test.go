package discovery_test

import (
	"testing"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}
