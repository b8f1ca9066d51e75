using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Drydock.Hypervisor.Libvirt.Interop;

/// <summary>A <c>virConnectPtr</c>; closing drops the connection's reference.</summary>
internal sealed class ConnectSafeHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public ConnectSafeHandle()
        : base(ownsHandle: true)
    {
    }

    public ConnectSafeHandle(nint handle)
        : base(ownsHandle: true) => SetHandle(handle);

    protected override bool ReleaseHandle() => NativeMethods.virConnectClose(handle) >= 0;
}

/// <summary>A <c>virDomainPtr</c>; freeing drops the reference.</summary>
internal sealed class DomainSafeHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public DomainSafeHandle()
        : base(ownsHandle: true)
    {
    }

    public DomainSafeHandle(nint handle)
        : base(ownsHandle: true) => SetHandle(handle);

    protected override bool ReleaseHandle() => NativeMethods.virDomainFree(handle) == 0;
}

/// <summary>A <c>virDomainCheckpointPtr</c>; freeing drops the reference (the checkpoint itself stays).</summary>
internal sealed class CheckpointSafeHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public CheckpointSafeHandle()
        : base(ownsHandle: true)
    {
    }

    public CheckpointSafeHandle(nint handle)
        : base(ownsHandle: true) => SetHandle(handle);

    protected override bool ReleaseHandle() => NativeMethods.virDomainCheckpointFree(handle) == 0;
}

/// <summary>Helpers for libvirt's string conventions.</summary>
internal static unsafe class NativeStrings
{
    /// <summary>Copies a <c>char*</c> libvirt allocated and frees it.</summary>
    public static string? TakeOwned(byte* text)
    {
        if (text is null)
        {
            return null;
        }

        try
        {
            return Marshal.PtrToStringUTF8((nint)text);
        }
        finally
        {
            NativeMemory.Free(text);
        }
    }

    /// <summary>Copies a <c>const char*</c> that belongs to libvirt.</summary>
    public static string? Borrowed(byte* text) => text is null ? null : Marshal.PtrToStringUTF8((nint)text);
}
