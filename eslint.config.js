// Lint rules for nodemesh. Each ban carries its reason beside it.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', '.tools/**', 'bpf/build/**', '**/*.generated.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // A promise nobody awaits loses its error: the reconcile that failed would look like it succeeded.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      // Library code reports through its logger, so the process that hosts it decides where lines go.
      'no-console': 'error',
      // Only a main module decides when the process ends; libraries throw and let it clean up.
      'no-restricted-properties': ['error', { object: 'process', property: 'exit', message: 'only main modules (main.ts, cli/) may end the process' }],
    },
  },
  {
    // Entry points and tools own the terminal and the process lifetime.
    files: ['**/main.ts', 'cli/**/*.ts', 'bench/**/*.ts', 'test/**/*.ts', '**/*.test.ts', 'sandbox/workloads/**/*.ts', 'scripts/**/*.ts'],
    rules: { 'no-console': 'off', 'no-restricted-properties': 'off' },
  },
  {
    files: ['**/*.test.ts', 'test/**/*.ts'],
    rules: {
      // node:test's describe/it return promises the runner awaits itself.
      '@typescript-eslint/no-floating-promises': 'off',
    },
  },
);
