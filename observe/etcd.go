package observe

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// etcdRenames maps the etcd transport's (rafthttp's) per-peer series to the
// raftproxy_ names they are exported under as well. rafthttp counts every
// message and snapshot byte and probes each peer's round trip itself, so
// raftproxy reads its numbers rather than counting the same bytes again in
// the hot path.
func etcdRenames() map[string]string {
	return map[string]string{
		"etcd_network_peer_sent_bytes_total":                   "raftproxy_peer_sent_bytes_total",
		"etcd_network_peer_received_bytes_total":               "raftproxy_peer_received_bytes_total",
		"etcd_network_peer_round_trip_time_seconds":            "raftproxy_peer_round_trip_seconds",
		"etcd_network_snapshot_send_total_duration_seconds":    "raftproxy_snapshot_send_duration_seconds",
		"etcd_network_snapshot_receive_total_duration_seconds": "raftproxy_snapshot_receive_duration_seconds",
	}
}

// etcdRenamed re-exports the etcdRenames series of g under their raftproxy_
// names, keeping their labels (To or From: the peer's id in hex). It is an
// unchecked collector: the series appear once rafthttp has one for a peer.
type etcdRenamed struct{ g prometheus.Gatherer }

func (etcdRenamed) Describe(chan<- *prometheus.Desc) {}

func (e etcdRenamed) Collect(ch chan<- prometheus.Metric) {
	// Gather returns what it could gather along with an error; export that.
	mfs, _ := e.g.Gather()
	renames := etcdRenames()
	for _, mf := range mfs {
		to, ok := renames[mf.GetName()]
		if !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			var names, values []string
			for _, lp := range m.GetLabel() {
				names = append(names, lp.GetName())
				values = append(values, lp.GetValue())
			}
			desc := prometheus.NewDesc(to, mf.GetHelp()+" (rafthttp's "+mf.GetName()+")", names, nil)
			var pm prometheus.Metric
			var err error
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				pm, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, m.GetCounter().GetValue(), values...)
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				buckets := make(map[float64]uint64, len(h.GetBucket()))
				for _, b := range h.GetBucket() {
					buckets[b.GetUpperBound()] = b.GetCumulativeCount()
				}
				pm, err = prometheus.NewConstHistogram(desc, h.GetSampleCount(), h.GetSampleSum(), buckets, values...)
			default:
				continue
			}
			if err != nil {
				ch <- prometheus.NewInvalidMetric(desc, err)
				continue
			}
			ch <- pm
		}
	}
}
