module github.com/fleet-exporter/fleet_exporter

go 1.25.0
