using System.Runtime.Versioning;

// The kit starts Linux services (qemu, nbdkit) and signals Unix process groups: Linux only.
[assembly: SupportedOSPlatform("linux")]
