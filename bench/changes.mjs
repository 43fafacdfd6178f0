// What was changed for issue 19 (speed at the in-process floor), and what each change
// bought: the paired ratio to the floor from `npm run bench -- --quick` runs before and after
// the change, on this machine. Filled in as changes land; the report prints it as a table.
export const CHANGES = []
