;; sealer: ECALLs `seal`, `seal_signer` and `unseal` show EGETKEY SEAL_KEY derivation; the "cipher" is a TOY, not cryptography.
;;
;; WHAT THIS DEMONSTRATES: deriving seal keys with EGETKEY (KEYNAME = SEAL_KEY) under KEYPOLICY
;; MRENCLAVE (`seal`) or MRSIGNER (`seal_signer`), reading the enclave's own ISVSVN with EREPORT,
;; and unsealing data sealed by an older ISVSVN of the same signer. WebAssembly has no AES here, so
;; the key is used by a toy construction: an xorshift64* keystream XORed over the data and a keyed
;; FNV/splitmix checksum as "tag". It is NOT a cipher and NOT a MAC. It has no nonce (sealing the
;; same data twice gives the same blob) and is trivially breakable. Real sealing uses AES-GCM with
;; this key and a random KEYID/nonce.
;;
;; Sealed blob: policy u8 (1 = MRENCLAVE, 2 = MRSIGNER) ‖ ISVSVN u16 LE ‖ data XOR keystream ‖
;; tag (16 bytes, over everything before it).
;;
;; Results: bytes written; -2 = output buffer too small; -3 = bad input (too long, too short, bad
;; policy byte, tag mismatch, or EGETKEY refused the key, e.g. a blob from a newer ISVSVN).
(module
  (import "vsgx" "copy_in" (func $copy_in (param i32 i64 i32)))
  (import "vsgx" "copy_out" (func $copy_out (param i64 i32 i32)))
  (import "vsgx" "egetkey" (func $egetkey (param i32 i32) (result i64)))
  (import "vsgx" "ereport" (func $ereport (param i32 i32 i32)))
  (import "env" "memory" (memory 1))

  ;; Linear-memory layout (ENCLU operands keep their architectural alignment; the heap is page
  ;; aligned, so these offsets have the same alignment as their linear addresses):
  ;;   0x0000 TARGETINFO  512 bytes, 512-aligned, all zero (a report for nobody: we only read our ISVSVN)
  ;;   0x0200 REPORTDATA   64 bytes, 128-aligned, all zero
  ;;   0x0400 REPORT      432 bytes, 512-aligned
  ;;   0x0600 KEYREQUEST  512 bytes, 512-aligned
  ;;   0x0800 key          16 bytes, 16-aligned (cleared after use)
  ;;   0x0810 tag scratch  16 bytes
  ;;   0x1000 the blob being sealed or unsealed
  (global $targetinfo i32 (i32.const 0x0000))
  (global $reportdata i32 (i32.const 0x0200))
  (global $report i32 (i32.const 0x0400))
  (global $keyrequest i32 (i32.const 0x0600))
  (global $key i32 (i32.const 0x0800))
  (global $tag i32 (i32.const 0x0810))
  (global $blob i32 (i32.const 0x1000))
  ;; Blob overhead: policy (1) + ISVSVN (2) + tag (16).
  (global $overhead i32 (i32.const 19))
  ;; Longest plaintext.
  (global $max_data i64 (i64.const 0xE000))

  ;; Our own ISVSVN: EREPORT copies it from the SECS into REPORT.ISVSVN (offset 258).
  (func $own_isvsvn (result i32)
    (call $ereport (global.get $targetinfo) (global.get $reportdata) (global.get $report))
    (i32.load16_u offset=258 (global.get $report)))

  ;; EGETKEY(SEAL_KEY, policy, isvsvn) into $key; returns EGETKEY's RAX (0 = success).
  ;; KEYREQUEST (SGX.md §1.12): KEYNAME @0, KEYPOLICY @2, ISVSVN @4, CPUSVN @8 (left zero: it must
  ;; not exceed the platform's), ATTRIBUTEMASK @24 (FLAGS all ones, XFRM 0), KEYID @40 (zero),
  ;; MISCMASK @72 (all ones); every other byte stays zero.
  (func $get_key (param $policy i32) (param $isvsvn i32) (result i64)
    (i32.store16 offset=0 (global.get $keyrequest) (i32.const 4))
    (i32.store16 offset=2 (global.get $keyrequest) (local.get $policy))
    (i32.store16 offset=4 (global.get $keyrequest) (local.get $isvsvn))
    (i64.store offset=24 (global.get $keyrequest) (i64.const -1))
    (i32.store offset=72 (global.get $keyrequest) (i32.const -1))
    (call $egetkey (global.get $keyrequest) (global.get $key)))

  (func $forget_key
    (i64.store offset=0 (global.get $key) (i64.const 0))
    (i64.store offset=8 (global.get $key) (i64.const 0)))

  ;; splitmix64 finalizer.
  (func $mix (param $z i64) (result i64)
    (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30))) (i64.const 0xBF58476D1CE4E5B9)))
    (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27))) (i64.const 0x94D049BB133111EB)))
    (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31))))

  ;; TOY: XORs [p, p + n) with an xorshift64* stream seeded from the key (same call decrypts).
  (func $crypt (param $p i32) (param $n i32)
    (local $s i64) (local $w i64) (local $i i32)
    (local.set $s (i64.or
      (call $mix (i64.xor (i64.load offset=0 (global.get $key)) (i64.rotl (i64.load offset=8 (global.get $key)) (i64.const 32))))
      (i64.const 1)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (i32.eqz (i32.and (local.get $i) (i32.const 7)))
          (then
            (local.set $s (i64.xor (local.get $s) (i64.shr_u (local.get $s) (i64.const 12))))
            (local.set $s (i64.xor (local.get $s) (i64.shl (local.get $s) (i64.const 25))))
            (local.set $s (i64.xor (local.get $s) (i64.shr_u (local.get $s) (i64.const 27))))
            (local.set $w (i64.mul (local.get $s) (i64.const 0x2545F4914F6CDD1D)))))
        (i32.store8 (i32.add (local.get $p) (local.get $i))
          (i32.xor (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.wrap_i64 (local.get $w))))
        (local.set $w (i64.shr_u (local.get $w) (i64.const 8)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

  ;; TOY: keyed checksum of [p, p + n) into the 16 bytes at $tag.
  (func $checksum (param $p i32) (param $n i32)
    (local $a i64) (local $b i64) (local $c i64) (local $i i32)
    (local.set $a (i64.load offset=0 (global.get $key)))
    (local.set $b (i64.load offset=8 (global.get $key)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i64.load8_u (i32.add (local.get $p) (local.get $i))))
        (local.set $a (i64.mul (i64.xor (local.get $a) (local.get $c)) (i64.const 0x100000001B3)))
        (local.set $b (i64.add (i64.rotl (i64.xor (local.get $b) (local.get $a)) (i64.const 23)) (local.get $c)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.set $a (i64.xor (local.get $a) (i64.extend_i32_u (local.get $n))))
    (i64.store offset=0 (global.get $tag)
      (call $mix (i64.xor (local.get $a) (i64.load offset=8 (global.get $key)))))
    (i64.store offset=8 (global.get $tag)
      (call $mix (i64.xor (i64.add (local.get $b) (local.get $a)) (i64.load offset=0 (global.get $key))))))

  (func $seal (param $policy i32) (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (local $n i32) (local $isvsvn i32) (local $total i32)
    (if (i64.gt_u (local.get $in_len) (global.get $max_data))
      (then (return (i64.const -3))))
    (local.set $n (i32.wrap_i64 (local.get $in_len)))
    (local.set $total (i32.add (local.get $n) (global.get $overhead)))
    (if (i64.lt_u (local.get $out_cap) (i64.extend_i32_u (local.get $total)))
      (then (return (i64.const -2))))
    ;; Seal under the enclave's own (current) ISVSVN.
    (local.set $isvsvn (call $own_isvsvn))
    (if (i64.ne (call $get_key (local.get $policy) (local.get $isvsvn)) (i64.const 0))
      (then (return (i64.const -3))))
    (i32.store8 offset=0 (global.get $blob) (local.get $policy))
    (i32.store16 offset=1 (global.get $blob) (local.get $isvsvn))
    (call $copy_in (i32.add (global.get $blob) (i32.const 3)) (local.get $in) (local.get $n))
    (call $crypt (i32.add (global.get $blob) (i32.const 3)) (local.get $n))
    (call $checksum (global.get $blob) (i32.add (local.get $n) (i32.const 3)))
    (i64.store offset=3 (i32.add (global.get $blob) (local.get $n)) (i64.load offset=0 (global.get $tag)))
    (i64.store offset=11 (i32.add (global.get $blob) (local.get $n)) (i64.load offset=8 (global.get $tag)))
    (call $forget_key)
    (call $copy_out (local.get $out) (global.get $blob) (local.get $total))
    (i64.extend_i32_u (local.get $total)))

  ;; Input: the data to seal. Output: a blob bound to this enclave (KEYPOLICY = MRENCLAVE).
  (func (export "ecall_seal") (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (call $seal (i32.const 1) (local.get $in) (local.get $in_len) (local.get $out) (local.get $out_cap)))

  ;; Input: the data to seal. Output: a blob bound to the signer (KEYPOLICY = MRSIGNER): any
  ;; enclave of this signer with the same ISVPRODID and an ISVSVN at least the blob's can unseal it.
  (func (export "ecall_seal_signer") (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (call $seal (i32.const 2) (local.get $in) (local.get $in_len) (local.get $out) (local.get $out_cap)))

  ;; Input: a blob from `seal` or `seal_signer`. Output: the data. The key is requested with the
  ;; blob's ISVSVN, so blobs sealed by an older version still open; EGETKEY refuses ISVSVNs newer
  ;; than ours (→ -3).
  (func (export "ecall_unseal") (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (local $n i32) (local $policy i32) (local $end i32)
    (if (i64.lt_u (local.get $in_len) (i64.extend_i32_u (global.get $overhead)))
      (then (return (i64.const -3))))
    (if (i64.gt_u (local.get $in_len) (i64.add (global.get $max_data) (i64.extend_i32_u (global.get $overhead))))
      (then (return (i64.const -3))))
    (local.set $n (i32.sub (i32.wrap_i64 (local.get $in_len)) (global.get $overhead)))
    (if (i64.lt_u (local.get $out_cap) (i64.extend_i32_u (local.get $n)))
      (then (return (i64.const -2))))
    (call $copy_in (global.get $blob) (local.get $in) (i32.wrap_i64 (local.get $in_len)))
    (local.set $policy (i32.load8_u offset=0 (global.get $blob)))
    (if (i32.and (i32.ne (local.get $policy) (i32.const 1)) (i32.ne (local.get $policy) (i32.const 2)))
      (then (return (i64.const -3))))
    (if (i64.ne (call $get_key (local.get $policy) (i32.load16_u offset=1 (global.get $blob))) (i64.const 0))
      (then (return (i64.const -3))))
    (call $checksum (global.get $blob) (i32.add (local.get $n) (i32.const 3)))
    (local.set $end (i32.add (global.get $blob) (local.get $n)))
    (if (i32.or
          (i64.ne (i64.load offset=0 (global.get $tag)) (i64.load offset=3 (local.get $end)))
          (i64.ne (i64.load offset=8 (global.get $tag)) (i64.load offset=11 (local.get $end))))
      (then
        (call $forget_key)
        (return (i64.const -3))))
    (call $crypt (i32.add (global.get $blob) (i32.const 3)) (local.get $n))
    (call $forget_key)
    (call $copy_out (local.get $out) (i32.add (global.get $blob) (i32.const 3)) (local.get $n))
    (i64.extend_i32_u (local.get $n))))
