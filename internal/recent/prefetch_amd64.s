#include "textflag.h"

// func prefetch(p unsafe.Pointer, n uintptr)
// PREFETCHT0 of each 64-byte line of [p, p+n): a hint, never a fault, not
// ordered by the locked instructions that follow (Intel SDM vol. 2,
// PREFETCHh), so a later store finds the line in cache.
TEXT ·prefetch(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), CX
	LEAQ (AX)(CX*1), CX
	ANDQ $~63, AX // from the line p is in: each line of the range
loop:
	CMPQ AX, CX
	JAE done
	PREFETCHT0 (AX)
	ADDQ $64, AX
	JMP loop
done:
	RET
