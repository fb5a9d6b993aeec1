/** `T` with its readonly fields writable: for an object built field by field before it is handed out as `T`. */
export type Writable<T> = { -readonly [K in keyof T]: T[K] };
