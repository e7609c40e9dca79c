package collector

import (
	"encoding/binary"
	"math"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
)

// The protobuf writer: io.prometheus.client.MetricFamily messages, each
// preceded by its length as a varint, written from the rows of a TextWriter.
// Field numbers are those of client_model's metrics.proto; fields appear in
// number order, as protobuf-go marshals them, so the output is byte for byte
// the registry's through expfmt, which TestProtobufWriterMatchesRegistry
// checks.
const (
	// MetricFamily
	fieldFamilyName   = 1
	fieldFamilyHelp   = 2
	fieldFamilyType   = 3
	fieldFamilyMetric = 4
	// Metric
	fieldMetricLabel   = 1
	fieldMetricGauge   = 2
	fieldMetricCounter = 3
	// LabelPair
	fieldLabelName  = 1
	fieldLabelValue = 2
	// Gauge and Counter
	fieldValue = 1
)

// valueFieldSize is the size of a Metric's gauge or counter field: tag,
// length, and the submessage's value field (tag and a fixed64 double).
const valueFieldSize = 1 + 1 + 1 + 8

// protoFamilyHeader returns the name, help and type fields of f.
func protoFamilyHeader(f *family) []byte {
	var b []byte
	b = protowire.AppendTag(b, fieldFamilyName, protowire.BytesType)
	b = protowire.AppendString(b, f.name)
	b = protowire.AppendTag(b, fieldFamilyHelp, protowire.BytesType)
	b = protowire.AppendString(b, f.help)
	b = protowire.AppendTag(b, fieldFamilyType, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(f.typ))
}

// appendProtoLabels appends the label fields of a Metric for row r.
func (w *TextWriter) appendProtoLabels(buf []byte, slots []slot, r row) []byte {
	for i := range slots {
		sl := &slots[i]
		v := w.value(sl, r)
		n := 1 + protowire.SizeBytes(len(sl.name)) + 1 + protowire.SizeBytes(len(v))
		buf = protowire.AppendTag(buf, fieldMetricLabel, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(n))
		buf = protowire.AppendTag(buf, fieldLabelName, protowire.BytesType)
		buf = protowire.AppendString(buf, sl.name)
		buf = protowire.AppendTag(buf, fieldLabelValue, protowire.BytesType)
		buf = protowire.AppendString(buf, v)
	}
	return buf
}

// protoFamily writes one family as a length-delimited MetricFamily. The
// length comes first, so a first pass adds up the sizes of the series that
// exist; every label set is rendered ahead (buildRows), so that pass only
// reads lengths.
func (w *TextWriter) protoFamily(f *textFamily) {
	rows := w.rows[f.rows]
	size := len(f.header)
	for i, r := range rows {
		if _, ok := f.value(w, r); ok {
			m := len(w.labelsOf(f.rows, i, r)) + valueFieldSize
			size += 1 + protowire.SizeBytes(m)
		}
	}
	if size == len(f.header) {
		// No series: a registry leaves the family out.
		return
	}
	valueField := byte(protowire.EncodeTag(fieldMetricGauge, protowire.BytesType))
	if f.typ == dto.MetricType_COUNTER {
		valueField = byte(protowire.EncodeTag(fieldMetricCounter, protowire.BytesType))
	}
	buf := protowire.AppendVarint(w.buf, uint64(size))
	buf = append(buf, f.header...)
	for i, r := range rows {
		v, ok := f.value(w, r)
		if !ok {
			continue
		}
		l := w.labelsOf(f.rows, i, r)
		buf = protowire.AppendTag(buf, fieldFamilyMetric, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(len(l)+valueFieldSize))
		buf = append(buf, l...)
		buf = append(buf, valueField, 1+8, byte(protowire.EncodeTag(fieldValue, protowire.Fixed64Type)))
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
		if len(buf) >= textFlushSize {
			w.buf = buf
			w.flush()
			if w.err != nil {
				return
			}
			buf = w.buf
		}
	}
	w.buf = buf
}
