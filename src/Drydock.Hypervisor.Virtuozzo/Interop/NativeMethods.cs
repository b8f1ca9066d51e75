using System.Runtime.InteropServices;

[assembly: DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]

namespace Drydock.Hypervisor.Virtuozzo.Interop;

/// <summary>
/// libvirt.so.0 for the Virtuozzo driver: the few stock entry points it needs (connection, domain lookup, XML, state,
/// lifecycle, errors) bound with <see cref="LibraryImportAttribute"/>, and the Virtuozzo X entry points, which stock
/// libvirt lacks, resolved at run time with <see cref="NativeLibrary.TryGetExport"/> (<see cref="XApi"/>).
/// </summary>
internal static unsafe partial class NativeMethods
{
    public const string Library = "libvirt.so.0";

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint virConnectOpen(string? name);

    [LibraryImport(Library)]
    public static partial int virConnectClose(nint conn);

    [LibraryImport(Library)]
    public static partial byte* virConnectGetHostname(nint conn);

    [LibraryImport(Library)]
    public static partial int virConnectListAllDomains(nint conn, out nint* domains, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint virDomainLookupByUUIDString(nint conn, string uuid);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint virDomainLookupByName(nint conn, string name);

    [LibraryImport(Library)]
    public static partial int virDomainFree(nint domain);

    [LibraryImport(Library)]
    public static partial byte* virDomainGetXMLDesc(nint domain, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainGetState(nint domain, out int state, out int reason, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int virDomainGetBlockInfo(nint domain, string disk, out BlockInfo info, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainCreateWithFlags(nint domain, uint flags);

    [LibraryImport(Library)]
    public static partial int virDomainResume(nint domain);

    [LibraryImport(Library)]
    public static partial int virDomainDestroy(nint domain);

    [LibraryImport(Library)]
    public static partial ErrorRecord* virGetLastError();

    [LibraryImport(Library)]
    public static partial void virResetLastError();

    /// <summary><c>virDomainBlockInfo</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct BlockInfo
    {
        public ulong Capacity;
        public ulong Allocation;
        public ulong Physical;
    }

    /// <summary>The first fields of <c>struct _virError</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct ErrorRecord
    {
        public int Code;
        public int Domain;
        public byte* Message;
    }

    /// <summary>The libvirt error of the calling thread, cleared.</summary>
    public static (int Code, string Message) TakeLastError(string function)
    {
        var error = virGetLastError();
        var result = error is null ? (0, $"{function} failed.") : (error->Code, Marshal.PtrToStringUTF8((nint)error->Message) ?? $"{function} failed.");
        virResetLastError();
        return result;
    }
}

/// <summary>
/// The Virtuozzo X API entry points, resolved at run time. Names and signatures marked "documented" are those of the
/// Virtuozzo libvirt API reference (module libvirt-domain-backup); those marked "inferred" follow libvirt's naming
/// rules for the functions the reference lists but whose entries could not be read (docs/HYPERVISORS.md).
/// </summary>
internal sealed unsafe class XApi
{
    /// <summary>The entry points the driver cannot work without.</summary>
    public static readonly string[] Required =
    [
        "virDomainBlockSnapshotXCreateXML",
        "virDomainBlockSnapshotXDelete",
        "virDomainBlockExportXStart",
        "virDomainBlockExportXStop",
        "virDomainBlockCheckpointXRemove",
        "virDomainBlockSnapshotXLookupByName",
        "virDomainBlockSnapshotXGetXMLDesc",
        "virDomainBlockSnapshotXFree",
    ];

    // documented
    public delegate* unmanaged<nint, nint, uint, nint> SnapshotCreateXml;
    public delegate* unmanaged<nint, uint, int> SnapshotDelete;
    public delegate* unmanaged<nint, nint, uint, int> ExportStart;
    public delegate* unmanaged<nint, nint, uint, int> ExportStop;
    public delegate* unmanaged<nint, nint, uint, int> CheckpointRemove;

    // inferred
    public delegate* unmanaged<nint, nint, uint, nint> SnapshotLookupByName;
    public delegate* unmanaged<nint, uint, byte*> SnapshotGetXmlDesc;
    public delegate* unmanaged<nint, int> SnapshotFree;
    public delegate* unmanaged<nint, nint**, uint, int> SnapshotListAll;

    /// <summary>Resolves the X API in libvirt.so.0; lists the missing entry points when it is not there.</summary>
    public static XApi? TryLoad(out IReadOnlyList<string> missing)
    {
        var absent = new List<string>();
        if (!NativeLibrary.TryLoad(NativeMethods.Library, typeof(XApi).Assembly, DllImportSearchPath.SafeDirectories, out var library))
        {
            missing = [NativeMethods.Library];
            return null;
        }

        nint Get(string name)
        {
            if (NativeLibrary.TryGetExport(library, name, out var address))
            {
                return address;
            }

            absent.Add(name);
            return 0;
        }

        var api = new XApi
        {
            SnapshotCreateXml = (delegate* unmanaged<nint, nint, uint, nint>)Get("virDomainBlockSnapshotXCreateXML"),
            SnapshotDelete = (delegate* unmanaged<nint, uint, int>)Get("virDomainBlockSnapshotXDelete"),
            ExportStart = (delegate* unmanaged<nint, nint, uint, int>)Get("virDomainBlockExportXStart"),
            ExportStop = (delegate* unmanaged<nint, nint, uint, int>)Get("virDomainBlockExportXStop"),
            CheckpointRemove = (delegate* unmanaged<nint, nint, uint, int>)Get("virDomainBlockCheckpointXRemove"),
            SnapshotLookupByName = (delegate* unmanaged<nint, nint, uint, nint>)Get("virDomainBlockSnapshotXLookupByName"),
            SnapshotGetXmlDesc = (delegate* unmanaged<nint, uint, byte*>)Get("virDomainBlockSnapshotXGetXMLDesc"),
            SnapshotFree = (delegate* unmanaged<nint, int>)Get("virDomainBlockSnapshotXFree"),
        };
        var beforeList = absent.Count;
        api.SnapshotListAll = (delegate* unmanaged<nint, nint**, uint, int>)Get("virDomainListAllBlockSnapshotsX");
        if (api.SnapshotListAll is null)
        {
            // The listing entry point's exact name was not readable in the reference: try the other libvirt spelling.
            absent.RemoveRange(beforeList, absent.Count - beforeList);
            api.SnapshotListAll = (delegate* unmanaged<nint, nint**, uint, int>)Get("virDomainBlockSnapshotXListAll");
        }

        missing = absent;
        return absent.Count == 0 ? api : null;
    }
}
