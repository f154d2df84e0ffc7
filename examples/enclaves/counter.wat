;; counter: ECALLs `increment` and `get` on a u64 kept in the enclave heap (heap state persists across ECALLs; globals do not).
(module
  (import "vsgx" "copy_out" (func $copy_out (param i64 i32 i32)))
  (import "env" "memory" (memory 1))

  ;; Address of the counter (u64 LE) in linear memory, i.e. in the enclave heap. It starts at 0
  ;; with the measured initial heap and lives as long as the enclave.
  (global $counter i32 (i32.const 0x100))

  ;; Copies the counter's 8 bytes out; -2 if the output buffer is too small.
  (func $reply (param $out i64) (param $out_cap i64) (result i64)
    (if (i64.lt_u (local.get $out_cap) (i64.const 8))
      (then (return (i64.const -2))))
    (call $copy_out (local.get $out) (global.get $counter) (i32.const 8))
    (i64.const 8))

  ;; Adds 1 and returns the new value as 8 LE bytes (result 8). The input is ignored. Nothing
  ;; changes when the output buffer is too small (-2).
  (func (export "ecall_increment") (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (if (i64.lt_u (local.get $out_cap) (i64.const 8))
      (then (return (i64.const -2))))
    (i64.store (global.get $counter) (i64.add (i64.load (global.get $counter)) (i64.const 1)))
    (call $reply (local.get $out) (local.get $out_cap)))

  ;; Returns the current value as 8 LE bytes (result 8).
  (func (export "ecall_get") (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (call $reply (local.get $out) (local.get $out_cap))))
