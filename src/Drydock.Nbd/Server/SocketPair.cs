using System.Net.Sockets;
using System.Runtime.InteropServices;
using Drydock.Nbd.Interop;

namespace Drydock.Nbd.Server;

/// <summary>
/// A connected pair of Unix stream sockets made by <c>socketpair(2)</c>: an in-process connection with real
/// socket semantics and no file on disk. Each end is its own open file, so one end can be used with
/// blocking IO (the client's reader thread) while the other is used asynchronously (the server).
/// </summary>
internal static class SocketPair
{
    /// <summary>Creates the pair.</summary>
    /// <returns>Two connected streams that own their sockets.</returns>
    /// <exception cref="IOException">The kernel refused.</exception>
    public static unsafe (NetworkStream First, NetworkStream Second) Create()
    {
        var descriptors = stackalloc int[2];
        if (NativeMethods.SocketPair(NativeMethods.AfUnix, NativeMethods.SockStream | NativeMethods.SockCloexec, 0, descriptors) != 0)
        {
            throw new IOException($"socketpair failed with errno {Marshal.GetLastPInvokeError()}");
        }

        NetworkStream? first = null;
        try
        {
            first = Wrap(descriptors[0]);
            var second = Wrap(descriptors[1]);
            var pair = (first, second);
            first = null;
            return pair;
        }
        finally
        {
            first?.Dispose();
        }
    }

    private static NetworkStream Wrap(int descriptor)
    {
        SafeSocketHandle? handle = new(descriptor, ownsHandle: true);
        Socket? socket = null;
        try
        {
            socket = new Socket(handle);
            handle = null;
            var stream = new NetworkStream(socket, ownsSocket: true);
            socket = null;
            return stream;
        }
        finally
        {
            socket?.Dispose();
            handle?.Dispose();
        }
    }
}
