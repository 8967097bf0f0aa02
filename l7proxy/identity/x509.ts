/** @peculiar/x509 with its Reflect polyfill loaded first (its tsyringe container throws without Reflect.getMetadata). */
import 'reflect-metadata';
export * from '@peculiar/x509';
