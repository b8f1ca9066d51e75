using System.Runtime.InteropServices;

// libvirt.so.0, libvirt-qemu.so.0 and libc are system libraries: never load them from the application directory.
[assembly: DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
