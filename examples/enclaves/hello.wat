;; hello: ECALL `hello` answers "Hello, " followed by the input with ASCII letters in upper case.
(module
  (import "vsgx" "copy_in" (func $copy_in (param i32 i64 i32)))
  (import "vsgx" "copy_out" (func $copy_out (param i64 i32 i32)))
  (import "env" "memory" (memory 1))

  ;; The reply is assembled at 0x1000: the prefix (a data segment, folded into the measured initial
  ;; heap by `vsgx enclave build`), then the input copied in behind it and upper-cased in place.
  (global $reply i32 (i32.const 0x1000))
  (global $prefix_len i32 (i32.const 7))
  (data (i32.const 0x1000) "Hello, ")
  ;; Longest input: the reply must fit in the 64 KiB the module asks for.
  (global $max_input i64 (i64.const 0xE000))

  ;; in = input address/length, out = output address/capacity (linear addresses outside the enclave).
  ;; Result: bytes written, -2 if the output buffer is too small, -3 if the input is too long.
  (func (export "ecall_hello") (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (local $n i32) (local $p i32) (local $end i32) (local $c i32)
    ;; Unsigned comparisons: a "negative" length is just a huge one.
    (if (i64.gt_u (local.get $in_len) (global.get $max_input))
      (then (return (i64.const -3))))
    (if (i64.lt_u (local.get $out_cap) (i64.add (local.get $in_len) (i64.const 7)))
      (then (return (i64.const -2))))
    (local.set $n (i32.wrap_i64 (local.get $in_len)))
    (local.set $p (i32.add (global.get $reply) (global.get $prefix_len)))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (call $copy_in (local.get $p) (local.get $in) (local.get $n))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        ;; 'a'..='z' → 'A'..='Z'
        (if (i32.lt_u (i32.sub (local.get $c) (i32.const 0x61)) (i32.const 26))
          (then (i32.store8 (local.get $p) (i32.sub (local.get $c) (i32.const 0x20)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (call $copy_out (local.get $out) (global.get $reply) (i32.add (global.get $prefix_len) (local.get $n)))
    (i64.extend_i32_u (i32.add (global.get $prefix_len) (local.get $n)))))
