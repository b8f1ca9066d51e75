using System.Collections.Concurrent;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>
/// Dedicated threads that make the driver's blocking libvirt calls, so that a slow libvirtd (a 30 s job-lock wait,
/// a hung QEMU monitor) never starves the thread pool. A work item runs the native call and reads libvirt's
/// thread-local error on the same thread. Cancellation stops an item that has not started; a started libvirt call
/// runs to its end.
/// </summary>
internal sealed class LibvirtWorker : IDisposable
{
    private readonly BlockingCollection<Action> _queue = [];
    private readonly Thread[] _threads;

    public LibvirtWorker(int threads, string name)
    {
        _threads = new Thread[threads];
        for (var i = 0; i < threads; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"{name}-{i}" };
            _threads[i].Start();
        }
    }

    /// <summary>Runs <paramref name="work"/> on a worker thread.</summary>
    public Task<T> RunAsync<T>(Func<T> work, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var registration = cancellationToken.Register(() => completion.TrySetCanceled(cancellationToken));
        try
        {
            _queue.Add(() =>
            {
                // Unregister without waiting for a callback in flight: it only cancels the completion source.
                registration.Unregister();
                if (completion.Task.IsCompleted)
                {
                    return;
                }

                try
                {
                    completion.TrySetResult(work());
                }
                catch (Exception ex)
                {
                    completion.TrySetException(ex);
                }
            }, CancellationToken.None);
        }
        catch (InvalidOperationException)
        {
            registration.Unregister();
            throw new ObjectDisposedException(nameof(LibvirtWorker));
        }

        return completion.Task;
    }

    /// <summary>Runs <paramref name="work"/> on a worker thread.</summary>
    public Task RunAsync(Action work, CancellationToken cancellationToken) =>
        RunAsync(() =>
        {
            work();
            return true;
        }, cancellationToken);

    /// <inheritdoc/>
    public void Dispose()
    {
        _queue.CompleteAdding();
        foreach (var thread in _threads)
        {
            thread.Join(TimeSpan.FromSeconds(5));
        }

        _queue.Dispose();
    }

    private void Run()
    {
        foreach (var item in _queue.GetConsumingEnumerable())
        {
            item();
        }
    }
}
