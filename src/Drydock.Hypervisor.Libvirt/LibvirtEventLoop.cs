using Drydock.Hypervisor.Libvirt.Interop;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>
/// libvirt's default event loop (<c>virEventRegisterDefaultImpl</c> + <c>virEventRunDefaultImpl</c>) on one
/// background thread for the whole process. It must be registered before the first connection is opened for that
/// connection to deliver domain events and keep-alive probes; <see cref="EnsureStarted"/> is called by every
/// <see cref="LibvirtDriver"/> before it connects. libvirt offers no way to unregister the default implementation, so
/// the thread lives as long as the process.
/// </summary>
internal static class LibvirtEventLoop
{
    private static readonly Lock Gate = new();
    private static Thread? _thread;

    /// <summary>Whether the loop is running.</summary>
    public static bool IsRunning => _thread is not null;

    /// <summary>Registers the default implementation and starts its thread, once per process.</summary>
    /// <exception cref="LibvirtNativeException">libvirt refused to register it.</exception>
    public static void EnsureStarted()
    {
        lock (Gate)
        {
            if (_thread is not null)
            {
                return;
            }

            // libvirt's default error handler prints every error to stderr; the driver reports them itself.
            unsafe
            {
                NativeMethods.virSetErrorFunc(0, &IgnoreError);
            }

            if (NativeMethods.virEventRegisterDefaultImpl() < 0)
            {
                throw new LibvirtNativeException(nameof(NativeMethods.virEventRegisterDefaultImpl), LibvirtErrorInfo.TakeLast(nameof(NativeMethods.virEventRegisterDefaultImpl)));
            }

            _thread = new Thread(Run) { IsBackground = true, Name = "libvirt-event-loop" };
            _thread.Start();
        }
    }

    [System.Runtime.InteropServices.UnmanagedCallersOnly(CallConvs = [typeof(System.Runtime.CompilerServices.CallConvCdecl)])]
    private static void IgnoreError(nint userData, nint error)
    {
    }

    private static void Run()
    {
        while (true)
        {
            if (NativeMethods.virEventRunDefaultImpl() < 0)
            {
                // An iteration failed (a broken fd callback): clear the error and keep serving the others.
                NativeMethods.virResetLastError();
                Thread.Sleep(10);
            }
        }
    }
}
