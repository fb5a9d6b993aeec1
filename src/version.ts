/** The release version, printed by `ippool --version`. */
export const VERSION = "0.1.0";
