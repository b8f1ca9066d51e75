using Xunit;

namespace Drydock.Nbd.Tests.TestSupport;

/// <summary>The running test's cancellation token, short to pass everywhere (<c>using static</c>).</summary>
public static class TestCancellation
{
    public static CancellationToken Ct => TestContext.Current.CancellationToken;
}
