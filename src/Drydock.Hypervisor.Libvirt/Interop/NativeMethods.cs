using System.Runtime.InteropServices;

namespace Drydock.Hypervisor.Libvirt.Interop;

/// <summary>
/// The libvirt.so.0 entry points the driver uses (libvirt 9.0 ABI; every symbol here exists since 8.5 or earlier).
/// Strings are UTF-8. Strings libvirt returns as <c>char*</c> it allocated must be released with <c>free</c>
/// (<see cref="NativeMemory.Free"/>); <c>const char*</c> results belong to the object they came from. Every call that
/// fails leaves a thread-local error that <see cref="virGetLastError"/> reads on the same thread.
/// </summary>
internal static unsafe partial class NativeMethods
{
    public const string Library = "libvirt.so.0";

    public const int UuidStringBufferLength = 37;

    // virConnectListAllDomains flags: 0 lists every domain.
    public const uint DomainXmlInactive = 1 << 1;
    public const uint DomainXmlSecure = 1 << 0;
    public const uint DomainStartPaused = 1 << 0;

    public const uint CheckpointCreateRedefine = 1 << 0;
    public const uint CheckpointCreateRedefineValidate = 1 << 2;
    public const uint CheckpointXmlNoDomain = 1 << 1;
    public const uint CheckpointXmlSize = 1 << 2;
    public const uint CheckpointListTopological = 1 << 1;
    public const uint CheckpointDeleteMetadataOnly = 1 << 1;

    public const uint JobStatsCompleted = 1 << 0;
    public const uint JobStatsKeepCompleted = 1 << 1;

    public const int EventIdLifecycle = 0;
    public const int EventIdBlockJob2 = 16;
    public const int EventIdDeviceRemoved = 15;
    public const int EventIdDeviceAdded = 19;
    public const int EventIdJobCompleted = 21;

    public const int TypedParamInt = 1;
    public const int TypedParamUInt = 2;
    public const int TypedParamLLong = 3;
    public const int TypedParamULLong = 4;
    public const int TypedParamDouble = 5;
    public const int TypedParamBoolean = 6;
    public const int TypedParamString = 7;

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint virConnectOpen(string? name);

    [LibraryImport(Library)]
    public static partial int virConnectClose(nint conn);

    [LibraryImport(Library)]
    public static partial byte* virConnectGetHostname(nint conn);

    [LibraryImport(Library)]
    public static partial int virConnectGetLibVersion(nint conn, out ulong version);

    [LibraryImport(Library)]
    public static partial int virConnectSetKeepAlive(nint conn, int interval, uint count);

    /// <summary>1 when the connection is open, 0 when libvirt has closed it (daemon gone, keep-alive timed out), -1 on error.</summary>
    [LibraryImport(Library)]
    public static partial int virConnectIsAlive(nint conn);

    /// <summary>Registers the one close callback of a connection: <c>void cb(virConnectPtr, int reason, void *opaque)</c>.</summary>
    [LibraryImport(Library)]
    public static partial int virConnectRegisterCloseCallback(nint conn, nint callback, nint opaque, nint freeCallback);

    [LibraryImport(Library)]
    public static partial int virConnectUnregisterCloseCallback(nint conn, nint callback);

    [LibraryImport(Library)]
    public static partial int virConnectListAllDomains(nint conn, out nint* domains, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint virDomainLookupByUUIDString(nint conn, string uuid);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint virDomainLookupByName(nint conn, string name);

    [LibraryImport(Library)]
    public static partial int virDomainRef(nint domain);

    [LibraryImport(Library)]
    public static partial int virDomainFree(nint domain);

    [LibraryImport(Library)]
    public static partial byte* virDomainGetName(nint domain);

    [LibraryImport(Library)]
    public static partial int virDomainGetUUIDString(nint domain, byte* buffer);

    [LibraryImport(Library)]
    public static partial int virDomainGetState(nint domain, out int state, out int reason, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainIsPersistent(nint domain);

    [LibraryImport(Library)]
    public static partial byte* virDomainGetXMLDesc(nint domain, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int virDomainGetBlockInfo(nint domain, string disk, out BlockInfo info, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainCreateWithFlags(nint domain, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainResume(nint domain);

    [LibraryImport(Library)]
    public static partial int virDomainDestroy(nint domain);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int virDomainBackupBegin(nint domain, string backupXml, string? checkpointXml, uint flags);

    [LibraryImport(Library)]
    public static partial byte* virDomainBackupGetXMLDesc(nint domain, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainAbortJobFlags(nint domain, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainGetJobStats(nint domain, out int type, out TypedParameter* parameters, out int count, uint flags);

    [LibraryImport(Library)]
    public static partial void virTypedParamsFree(TypedParameter* parameters, int count);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint virDomainCheckpointCreateXML(nint domain, string xml, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint virDomainCheckpointLookupByName(nint domain, string name, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainListAllCheckpoints(nint domain, out nint* checkpoints, uint flags);

    [LibraryImport(Library)]
    public static partial byte* virDomainCheckpointGetName(nint checkpoint);

    [LibraryImport(Library)]
    public static partial byte* virDomainCheckpointGetXMLDesc(nint checkpoint, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainCheckpointDelete(nint checkpoint, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainCheckpointFree(nint checkpoint);

    [LibraryImport(Library)]
    public static partial ErrorRecord* virGetLastError();

    [LibraryImport(Library)]
    public static partial void virResetLastError();

    [LibraryImport(Library)]
    public static partial void virSetErrorFunc(nint userData, delegate* unmanaged[Cdecl]<nint, nint, void> handler);

    [LibraryImport(Library)]
    public static partial int virEventRegisterDefaultImpl();

    [LibraryImport(Library)]
    public static partial int virEventRunDefaultImpl();

    [LibraryImport(Library)]
    public static partial int virEventAddTimeout(int timeout, delegate* unmanaged<int, nint, void> callback, nint opaque, nint freeCallback);

    [LibraryImport(Library)]
    public static partial int virEventUpdateTimeout(int timer, int timeout);

    [LibraryImport(Library)]
    public static partial int virConnectDomainEventRegisterAny(nint conn, nint domain, int eventId, nint callback, nint opaque, nint freeCallback);

    [LibraryImport(Library)]
    public static partial int virConnectDomainEventDeregisterAny(nint conn, int callbackId);

    /// <summary><c>virDomainBlockInfo</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct BlockInfo
    {
        public ulong Capacity;
        public ulong Allocation;
        public ulong Physical;
    }

    /// <summary><c>struct _virError</c> (only read, never written).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct ErrorRecord
    {
        public int Code;
        public int Domain;
        public byte* Message;
        public int Level;
        public nint Conn;
        public nint Dom;
        public byte* Str1;
        public byte* Str2;
        public byte* Str3;
        public int Int1;
        public int Int2;
        public nint Net;
    }

    /// <summary><c>virTypedParameter</c>: an 80-byte field name, a type, and an 8-byte union.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct TypedParameter
    {
        public fixed byte Field[80];
        public int Type;
        public long Value;
    }
}
