export declare const ENTRY: number
export declare const PATTERN_AT: number
export declare const PATTERN_LENGTH: number
export declare const CODE: Buffer
export declare const EXPECTED: Buffer
/** 32-bit protected-mode code writing the byte 1 at 0, `stride`, 2·`stride`, … below `end`, then `hlt`. */
export declare function stridedWrites(end: number, stride: number): Buffer
