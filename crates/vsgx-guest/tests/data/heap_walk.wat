;; heap_walk: writes a pattern over the whole enclave heap and sums it back, to exercise EPC
;; paging with a working set as large as the heap (tests/reclaim.rs, benches/paging.rs).
;;
;; Heap page 0 is scratch (the seed in, results out); the pattern covers [4096, heap end):
;; the u64 at address a is a * 0x9E3779B97F4A7C15 + seed (wrapping).
(module
  (import "vsgx" "copy_in" (func $copy_in (param i32 i64 i32)))
  (import "vsgx" "copy_out" (func $copy_out (param i64 i32 i32)))
  (import "env" "memory" (memory 1))

  ;; The u64 seed from the input (0 when the input is shorter than 8 bytes).
  (func $seed (param $in i64) (param $in_len i64) (result i64)
    (if (i64.lt_u (local.get $in_len) (i64.const 8))
      (then (return (i64.const 0))))
    (call $copy_in (i32.const 0) (local.get $in) (i32.const 8))
    (i64.load (i32.const 0)))

  (func $end (result i32)
    (i32.mul (memory.size) (i32.const 65536)))

  (func $fill (param $seed i64)
    (local $a i32) (local $end i32)
    (local.set $a (i32.const 4096))
    (local.set $end (call $end))
    (loop $l
      (i64.store (local.get $a)
        (i64.add (i64.mul (i64.extend_i32_u (local.get $a)) (i64.const 0x9E3779B97F4A7C15))
                 (local.get $seed)))
      (local.set $a (i32.add (local.get $a) (i32.const 8)))
      (br_if $l (i32.lt_u (local.get $a) (local.get $end)))))

  (func $sum (result i64)
    (local $a i32) (local $end i32) (local $s i64)
    (local.set $a (i32.const 4096))
    (local.set $end (call $end))
    (loop $l
      (local.set $s (i64.add (local.get $s) (i64.load (local.get $a))))
      (local.set $a (i32.add (local.get $a) (i32.const 8)))
      (br_if $l (i32.lt_u (local.get $a) (local.get $end))))
    (local.get $s))

  ;; Copies `n` result bytes from address 8 out; -2 when the output buffer is too small.
  (func $reply (param $out i64) (param $cap i64) (param $n i32) (result i64)
    (if (i64.lt_u (local.get $cap) (i64.extend_i32_u (local.get $n)))
      (then (return (i64.const -2))))
    (call $copy_out (local.get $out) (i32.const 8) (local.get $n))
    (i64.extend_i32_u (local.get $n)))

  ;; fill(seed): writes the pattern. Result 0.
  (func (export "ecall_fill") (param $in i64) (param $in_len i64) (param $out i64) (param $cap i64) (result i64)
    (call $fill (call $seed (local.get $in) (local.get $in_len)))
    (i64.const 0))

  ;; sum(): the wrapping sum of the pattern area as 8 LE bytes.
  (func (export "ecall_sum") (param $in i64) (param $in_len i64) (param $out i64) (param $cap i64) (result i64)
    (i64.store (i32.const 8) (call $sum))
    (call $reply (local.get $out) (local.get $cap) (i32.const 8)))

  ;; spin(): increments the u64 at address 8 forever; only an interrupt (AEX) stops it. With an
  ;; output buffer it first writes the byte 1 there, so the caller can see it is inside.
  (func (export "ecall_spin") (param $in i64) (param $in_len i64) (param $out i64) (param $cap i64) (result i64)
    (if (i64.ne (local.get $cap) (i64.const 0))
      (then
        (i32.store8 (i32.const 16) (i32.const 1))
        (call $copy_out (local.get $out) (i32.const 16) (i32.const 1))))
    (loop $l
      (i64.store (i32.const 8) (i64.add (i64.load (i32.const 8)) (i64.const 1)))
      (br $l))
    (i64.const 0))

  ;; run(seed): fill(seed), sum, fill(seed + 1), sum; both sums as 16 LE bytes.
  (func (export "ecall_run") (param $in i64) (param $in_len i64) (param $out i64) (param $cap i64) (result i64)
    (local $s i64) (local $first i64)
    (local.set $s (call $seed (local.get $in) (local.get $in_len)))
    (call $fill (local.get $s))
    (local.set $first (call $sum))
    (call $fill (i64.add (local.get $s) (i64.const 1)))
    (i64.store (i32.const 16) (call $sum))
    (i64.store (i32.const 8) (local.get $first))
    (call $reply (local.get $out) (local.get $cap) (i32.const 16))))
