using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using Drydock.Hypervisor.Qemu.Interop;

namespace Drydock.Hypervisor.Qemu;

/// <summary>
/// The identity of a disk image file: device, inode and (where the file system records it) birth time. A file
/// replaced under the same path — copied over, converted, restored from elsewhere — gets a new inode or birth time.
/// </summary>
internal static class DiskIdentity
{
    /// <summary>The identity of the file at <paramref name="path"/>, or null if it cannot be examined.</summary>
    /// <param name="path">The file, as this process sees it.</param>
    /// <returns>For example <c>file:2049:1234567:1735787045.123456789</c>.</returns>
    public static string? Of(string path)
    {
        Span<byte> buffer = stackalloc byte[256];
        if (NativeMethods.Statx(NativeMethods.AtFdCwd, path, 0, NativeMethods.StatxIno | NativeMethods.StatxBtime, buffer) != 0)
        {
            _ = Marshal.GetLastPInvokeError();
            return null;
        }

        // struct statx (linux/stat.h): stx_mask @0, stx_ino @32, stx_btime @80 (tv_sec i64, tv_nsec u32),
        // stx_dev_major @136, stx_dev_minor @140.
        var mask = BinaryPrimitives.ReadUInt32LittleEndian(buffer);
        var inode = BinaryPrimitives.ReadUInt64LittleEndian(buffer[32..]);
        var devMajor = BinaryPrimitives.ReadUInt32LittleEndian(buffer[136..]);
        var devMinor = BinaryPrimitives.ReadUInt32LittleEndian(buffer[140..]);
        var identity = string.Create(CultureInfo.InvariantCulture, $"file:{devMajor}.{devMinor}:{inode}");
        if ((mask & NativeMethods.StatxBtime) != 0)
        {
            var seconds = BinaryPrimitives.ReadInt64LittleEndian(buffer[80..]);
            var nanos = BinaryPrimitives.ReadUInt32LittleEndian(buffer[88..]);
            identity += string.Create(CultureInfo.InvariantCulture, $":{seconds}.{nanos:D9}");
        }

        return identity;
    }
}
