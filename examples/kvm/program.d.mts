export declare const ENTRY: number
export declare const PATTERN_AT: number
export declare const PATTERN_LENGTH: number
export declare const CODE: Buffer
export declare const EXPECTED: Buffer
