//! A Kafka record batch (message format v2) built natively from agentflow's outputs.
//!
//! aiokafka's `BatchBuilder.append` takes header pairs and encodes a record in Python-level
//! steps: per output, the producer first turned its header dict into `(str, bytes)` pairs and
//! then had them encoded again. `KafkaBatch` encodes a record straight from the dict, and
//! offers the methods aiokafka's accumulator and sender call on a builder (`size`,
//! `record_count`, `close`, `closed`, `_set_producer_state`, `_build`), so
//! `AIOKafkaProducer.send_batch` takes it as it takes its own.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

/// Bytes of the v2 batch header (base offset .. record count).
pub const HEADER_LEN: usize = 61;
/// Where the CRC-covered part starts (the attributes) and where the CRC itself sits.
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;
/// Offset of the first byte counted by the batch length field (after base offset + length).
const AFTER_LENGTH: usize = 12;
const TRANSACTIONAL: i16 = 0x10;

/// Append `value` as a zigzag varint (Kafka's varint/varlong encoding).
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        Some(d) => {
            put_varint(out, d.len() as i64);
            out.extend_from_slice(d);
        }
        None => put_varint(out, -1),
    }
}

/// The records and header fields of one batch; pure Rust, so `cargo test` covers the layout.
#[derive(Debug, Clone)]
pub struct Records {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    batch_size: usize,
    count: i32,
    first_ts: i64,
    max_ts: i64,
    transactional: bool,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Records {
    /// An empty batch that takes records up to `batch_size` bytes (the first always fits).
    pub fn new(batch_size: usize, transactional: bool) -> Self {
        Records {
            buf: vec![0; HEADER_LEN],
            scratch: Vec::new(),
            batch_size,
            count: 0,
            first_ts: 0,
            max_ts: 0,
            transactional,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: 0,
        }
    }

    /// Add one record; its size in the batch, or None when it does not fit (batch unchanged).
    #[cfg(test)]
    pub fn push(
        &mut self,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
        ts_ms: i64,
    ) -> Option<usize> {
        let written: Result<_, ()> = self.push_with(value, key, headers.len(), ts_ms, |body| {
            for (name, value) in headers {
                put_bytes(body, Some(name));
                put_bytes(body, Some(value));
            }
            Ok(())
        });
        written.unwrap_or(None)
    }

    /// `push`, with the `count` headers written by `headers` (name, then value, each as bytes).
    pub fn push_with<E>(
        &mut self,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        count: usize,
        ts_ms: i64,
        headers: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Option<usize>, E> {
        let first_ts = if self.count == 0 {
            ts_ms
        } else {
            self.first_ts
        };
        let body = &mut self.scratch;
        body.clear();
        body.push(0); // record attributes: unused
        put_varint(body, ts_ms - first_ts);
        put_varint(body, i64::from(self.count)); // offset delta
        put_bytes(body, key);
        put_bytes(body, value);
        put_varint(body, count as i64);
        headers(body)?;
        let mut prefix = Vec::with_capacity(5);
        put_varint(&mut prefix, body.len() as i64);
        let size = prefix.len() + body.len();
        if self.count > 0 && self.buf.len() + size > self.batch_size {
            return Ok(None);
        }
        self.buf.extend_from_slice(&prefix);
        self.buf.extend_from_slice(body);
        if self.count == 0 {
            self.first_ts = ts_ms;
            self.max_ts = ts_ms;
        }
        self.count += 1;
        self.max_ts = self.max_ts.max(ts_ms);
        Ok(Some(size))
    }

    /// Bytes of the batch as built (header included).
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    pub fn set_producer_state(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
    }

    /// The whole batch: header fields written, CRC-32C over attributes..end.
    pub fn build(&mut self) -> &[u8] {
        let length = (self.buf.len() - AFTER_LENGTH) as i32;
        let attributes: i16 = if self.transactional { TRANSACTIONAL } else { 0 };
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        h.extend_from_slice(&length.to_be_bytes());
        h.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch: none
        h.push(2); // magic
        h.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
        h.extend_from_slice(&attributes.to_be_bytes());
        h.extend_from_slice(&(self.count - 1).max(0).to_be_bytes()); // last offset delta
        h.extend_from_slice(&self.first_ts.to_be_bytes());
        h.extend_from_slice(&self.max_ts.to_be_bytes());
        h.extend_from_slice(&self.producer_id.to_be_bytes());
        h.extend_from_slice(&self.producer_epoch.to_be_bytes());
        h.extend_from_slice(&self.base_sequence.to_be_bytes());
        h.extend_from_slice(&self.count.to_be_bytes());
        self.buf[..HEADER_LEN].copy_from_slice(&h);
        let crc = crc32c::crc32c(&self.buf[ATTRIBUTES_AT..]);
        self.buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        &self.buf
    }
}

/// Write a header name or value (str) as a length-prefixed UTF-8 string. A value's lone
/// surrogates are written as `surrogateescape` gives them (the consumer reads them back as
/// U+FFFD); a name must be valid UTF-8, as Kafka clients decode names strictly.
fn put_text(body: &mut Vec<u8>, text: &Bound<'_, PyAny>, what: &str) -> PyResult<()> {
    let s = text.cast::<PyString>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "Kafka header {what} must be str, not {}",
            text.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    match s.to_str() {
        Ok(t) => put_bytes(body, Some(t.as_bytes())),
        Err(_) if what == "name" => Err(PyValueError::new_err(format!(
            "Kafka header name {} is not valid UTF-8",
            s.repr().map(|r| r.to_string()).unwrap_or_default()
        )))?,
        Err(_) => {
            let encoded = s.call_method1("encode", ("utf-8", "surrogateescape"))?;
            put_bytes(body, Some(encoded.cast::<PyBytes>()?.as_bytes()));
        }
    }
    Ok(())
}

/// A record batch for one topic partition that `AIOKafkaProducer.send_batch` accepts.
#[pyclass(module = "agentflow._native", name = "KafkaBatch")]
pub struct KafkaBatch {
    records: Records,
    closed: bool,
}

impl KafkaBatch {
    /// An open, empty batch (for the flush planner).
    pub(crate) fn open(batch_size: usize) -> Self {
        KafkaBatch {
            records: Records::new(batch_size, false),
            closed: false,
        }
    }

    /// Add a record with a header dict; its size, or None when the batch is full.
    pub(crate) fn push_dict(
        &mut self,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        headers: &Bound<'_, PyDict>,
        ts_ms: i64,
    ) -> PyResult<Option<usize>> {
        self.records
            .push_with(value, key, headers.len(), ts_ms, |body| {
                for (name, value) in headers.iter() {
                    put_text(body, &name, "name")?;
                    put_text(body, &value, "value")?;
                }
                Ok::<(), PyErr>(())
            })
    }
}

#[pymethods]
impl KafkaBatch {
    #[new]
    #[pyo3(signature = (batch_size, transactional=false))]
    fn new(batch_size: usize, transactional: bool) -> Self {
        KafkaBatch {
            records: Records::new(batch_size, transactional),
            closed: false,
        }
    }

    /// Add a record (headers: a dict of str to str); its size, or 0 when the batch is full.
    #[pyo3(signature = (value, key, headers, ts_ms))]
    fn add(
        &mut self,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        headers: &Bound<'_, PyDict>,
        ts_ms: i64,
    ) -> PyResult<usize> {
        if self.closed {
            return Err(PyValueError::new_err("the Kafka batch is closed"));
        }
        Ok(self.push_dict(value, key, headers, ts_ms)?.unwrap_or(0))
    }

    /// aiokafka's `BatchBuilder.append`: a closed batch takes nothing more (returns None).
    #[pyo3(signature = (**_kwargs))]
    fn append(&self, _kwargs: Option<&Bound<'_, PyDict>>) -> Option<i64> {
        None
    }

    /// Take no more records (aiokafka appends to an open batch queued for its partition).
    fn close(&mut self) {
        self.closed = true;
    }

    /// Whether the batch takes no more records.
    fn closed(&self) -> bool {
        self.closed
    }

    /// Bytes of the batch, header included.
    fn size(&self) -> usize {
        self.records.size()
    }

    /// Records in the batch.
    fn record_count(&self) -> i32 {
        self.records.count()
    }

    /// The idempotent producer's id, epoch and first sequence number (set before sending).
    fn _set_producer_state(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.records
            .set_producer_state(producer_id, producer_epoch, base_sequence);
    }

    /// The batch on the wire (closes it).
    fn _build<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.closed = true;
        PyBytes::new(py, self.records.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varints(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn zigzag_varints() {
        assert_eq!(varints(0), [0]);
        assert_eq!(varints(-1), [1]);
        assert_eq!(varints(1), [2]);
        assert_eq!(varints(63), [126]);
        assert_eq!(varints(64), [0x80, 1]);
        assert_eq!(varints(300), [0xD8, 0x04]);
    }

    #[test]
    fn first_record_always_fits_then_the_limit_holds() {
        let mut r = Records::new(80, false);
        let big = vec![b'x'; 200];
        assert!(r.push(Some(&big), None, &[], 5).is_some());
        assert_eq!(r.push(Some(b"y"), None, &[], 5), None);
        assert_eq!(r.count(), 1);
    }

    #[test]
    fn header_fields_and_crc() {
        let mut r = Records::new(1 << 20, false);
        let size = r
            .push(Some(b"v"), Some(b"k"), &[(b"h", b"1")], 1000)
            .unwrap();
        r.push(Some(b"w"), None, &[], 1003).unwrap();
        r.set_producer_state(7, 2, 40);
        assert_eq!(size, 13);
        let total = r.size();
        let b = r.build().to_vec();
        assert_eq!(
            i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize,
            total - 12
        );
        assert_eq!(b[16], 2);
        assert_eq!(i32::from_be_bytes(b[23..27].try_into().unwrap()), 1); // last delta
        assert_eq!(i64::from_be_bytes(b[27..35].try_into().unwrap()), 1000);
        assert_eq!(i64::from_be_bytes(b[35..43].try_into().unwrap()), 1003);
        assert_eq!(i64::from_be_bytes(b[43..51].try_into().unwrap()), 7);
        assert_eq!(i16::from_be_bytes(b[51..53].try_into().unwrap()), 2);
        assert_eq!(i32::from_be_bytes(b[53..57].try_into().unwrap()), 40);
        assert_eq!(i32::from_be_bytes(b[57..61].try_into().unwrap()), 2);
        let crc = u32::from_be_bytes(b[17..21].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&b[21..]));
        // first record: body length 12, attributes, ts delta 0, offset delta 0, key, value,
        // one header (all lengths and counts as zigzag varints)
        let first = [24, 0, 0, 0, 2, b'k', 2, b'v', 2, 2, b'h', 2, b'1'];
        assert_eq!(&b[61..74], &first);
        // second record: ts delta 3, offset delta 1, null key
        assert_eq!(&b[74..80], &[14, 0, 6, 2, 1, 2]);
    }
}
